"""Writing an import's groups with several processes, as the schedule allows.

Validation and search values are Python, bound to one core by the interpreter's
lock; a thread pool would not help. So groups are written by worker processes,
each with its own connection, and the one reading the files decides which groups
may be written side by side (:mod:`.schedule`). A group stays all or nothing: a
worker writes it with :func:`.loader.import_group`, exactly as one process would.
When its commit meets a concurrent write (two groups creating the same hospital
at once), nothing of it was written: it is written again once every earlier group
has finished, where it finds that record written. The first write of a group
presumes the records of patients with nothing recorded to be new
(``Repository.unrecorded_patients``): one read a patient instead of one a record; a
record that exists all the same makes that write contended, and the next one reads
every record by id.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..interactions.context import Context
from ..model.references import rewrite_references
from ..storage.protection import Protection
from .loader import Contended, ImportStats, import_group, plan_group
from .reader import SourceEntry
from .schedule import Schedule, group_keys

#: Writes of a contended group before it is written once more and its conflict,
#: if it meets one again, reported.
ATTEMPTS = 3
#: Groups read ahead per worker: enough to find one that can start, few enough to
#: keep memory small.
WINDOW_PER_JOB = 3


@dataclass(frozen=True)
class Group:
    """One group of an import, numbered in file order."""

    number: int
    source: Path
    entries: list[SourceEntry]


_context: Context | None = None


#: How often a worker checks that the process it works for is still there (s).
ORPHAN_CHECK_SECONDS = 1.0


def _start(settings: Settings, parent: int) -> None:
    """A worker's connection and request context, made once. ``parent`` is the
    import's process id, given by the import itself: a worker still starting when the
    import was killed has been adopted by then, and its own parent would be its
    adopter."""
    global _context
    from ..storage.repository import Repository

    threading.Thread(target=_end_with, args=(parent,), daemon=True,
                     name="import-parent").start()
    # The import that starts it has made the indexes and recovered (cli.run_import).
    repo = Repository.from_settings(settings, initialise=False)
    _context = Context(repo, settings, settings.base_url.rstrip("/") or "")


def _end_with(parent: int) -> None:
    """End this worker when the import that started it has ended (killed, say): its
    queued groups can tell no one their outcome, and a worker would otherwise wait for
    work forever. A group it was writing is left to recovery, as a killed import's
    is (storage/recovery.py)."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(1)


def first_write(ctx: Context, entries: list[SourceEntry], source: str) -> ImportStats | None:
    """A group's first write, presuming the records of patients with nothing recorded
    to be new; None when it met a concurrent write (nothing of it written)."""
    stats = ImportStats()
    try:
        import_group(ctx, entries, stats, source, contended=True, presume=True)
    except Contended:
        return None
    return stats


def write_again(ctx: Context, entries: list[SourceEntry], source: str) -> ImportStats:
    """A group written again, reading every record, while it meets concurrent writes
    (of later groups: the earlier ones have finished); then its conflict reported."""
    for _ in range(ATTEMPTS):
        stats = ImportStats()
        try:
            import_group(ctx, entries, stats, source, contended=True)
            return stats
        except Contended:
            continue
    stats = ImportStats()
    import_group(ctx, entries, stats, source)
    return stats


def write_group(ctx: Context, entries: list[SourceEntry], source: str) -> ImportStats:
    """One group, in this process (an import of one process)."""
    return first_write(ctx, entries, source) or write_again(ctx, entries, source)


def _write(entries: list[SourceEntry], source: str, again: bool) -> ImportStats | None:
    assert _context is not None, "worker started without its context"
    if again:
        return write_again(_context, entries, source)
    return first_write(_context, entries, source)


def write_groups(settings: Settings, groups: Iterable[Group], jobs: int,
                 protection: Protection, done: Callable[[Group, ImportStats], None]) -> None:
    """Write ``groups`` with ``jobs`` worker processes; ``done`` is called in this
    process as each group is written, in the order they end."""
    base_url = settings.base_url.rstrip("/") or ""
    schedule = Schedule()
    waiting: dict[int, Group] = {}
    running: dict[Future[ImportStats | None], Group] = {}
    contended: set[int] = set()  # groups to write again after every earlier one
    pending: Iterator[Group] = iter(groups)
    exhausted = False
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start, initargs=(settings, os.getpid()))
    try:
        while True:
            while not exhausted and len(schedule) < jobs * WINDOW_PER_JOB:
                group = next(pending, None)
                if group is None:
                    exhausted = True
                    break
                plan = plan_group(group.entries, protection)
                written = [(rtype, rid, {**rewrite_references(resource, plan.mapping.get),
                                         "id": rid}) for rtype, rid, resource in plan.kept]
                schedule.admit(group.number, group_keys(written, base_url))
                waiting[group.number] = group
            for number in schedule.ready():
                schedule.start(number)
                group = waiting.pop(number)
                running[pool.submit(_write, group.entries, str(group.source),
                                    number in contended)] = group
            if not running:
                if waiting:  # the oldest group waiting can only wait for running ones
                    raise RuntimeError(f"import schedule stuck on {len(waiting)} group(s)")
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: running[f].number):
                group = running.pop(future)
                stats = future.result()
                if stats is None:
                    contended.add(group.number)
                    schedule.again(group.number)
                    waiting[group.number] = group
                    continue
                schedule.finish(group.number)
                done(group, stats)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
