"""How a worker keeps the patients' sharing choices (DESIGN.md section 1) without
reading them all every few seconds: a change log (storage/changes.py) tells it which
ones another process changed."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fhirserver.auth import consent
from fhirserver.auth.consent import Choice
from fhirserver.storage import changes
from tests.finds import FindCounts, counted


@pytest.fixture
def watched(mongo_uri: str, db_name: str) -> Iterator[tuple[Any, FindCounts]]:
    """The test's database, every find sent to it counted; no choice cached yet."""
    with counted(mongo_uri, db_name) as (db, finds):
        consent._cache.pop(consent._cache_key(db), None)
        yield db, finds
        consent._cache.pop(consent._cache_key(db), None)


def saved_elsewhere(db: Any, patient: str, choice: Choice) -> None:
    """A choice saved by another worker: stored and counted, while this process's
    cache still holds what it read before."""
    held = consent._cache.get(consent._cache_key(db))
    kept = dataclasses.replace(held) if held is not None else None
    consent.save(db, patient, choice)
    if kept is not None:
        consent._cache[consent._cache_key(db)] = kept


def test_unchanged_choices_cost_one_read_of_the_counter(watched, monkeypatch) -> None:
    """Past REFRESH a worker finds again the last note it read, looks for the one
    after it and at the newest number (all three by id), and nothing more while there
    is none."""
    db, finds = watched
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    consent.save(db, "p1", Choice(opt_out=True))
    assert consent.cached(db, ["p1", "p2"]) == {"p1": Choice(opt_out=True)}
    finds.seen.clear()
    for _ in range(3):
        assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}
    assert finds.seen == Counter({"_consents_changes": 9})


def test_a_choice_another_worker_saves_is_read_alone_at_the_next_look(watched, monkeypatch) -> None:
    db, finds = watched
    monkeypatch.setattr(consent, "REFRESH", 60.0)
    consent.save(db, "p0", Choice(opt_out=True))
    assert consent.cached(db, ["p0", "p1"]) == {"p0": Choice(opt_out=True)}
    saved_elsewhere(db, "p1", Choice(restrict_sensitive=True))
    assert consent.cached(db, ["p1"]) == {}  # within REFRESH: what it read before
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    finds.seen.clear()
    assert consent.cached(db, ["p0", "p1"]) == {"p0": Choice(opt_out=True),
                                                "p1": Choice(restrict_sensitive=True)}
    # the last note read, the note naming p1, the look past it, and p1's choice:
    # never the collection whole
    assert finds.seen == Counter({"_consents_changes": 3, "_consents": 1})
    saved_elsewhere(db, "p1", Choice())  # withdrawn: read again as well
    saved_elsewhere(db, "p0", Choice())
    assert consent.cached(db, ["p0", "p1"]) == {"p0": Choice(), "p1": Choice()}


def test_a_worker_that_finds_many_changes_reads_the_choices_whole(watched, monkeypatch) -> None:
    db, finds = watched
    monkeypatch.setattr(changes, "NAMED_AT_MOST", 2)
    monkeypatch.setattr(changes, "KEEP", 20)
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    assert consent.cached(db, ["p1"]) == {}
    for i in range(3):
        saved_elsewhere(db, f"p{i}", Choice(opt_out=True))
    finds.seen.clear()
    assert consent.cached(db, ["p0", "p1", "p2"]) == {f"p{i}": Choice(opt_out=True) for i in range(3)}
    assert finds.seen["_consents whole"] == 1
    for i in range(25):  # the notes older than KEEP are dropped
        saved_elsewhere(db, "p0", Choice(restrict_sensitive=i % 2 == 0))
    assert db[changes.log_collection(consent.CONSENTS)].count_documents({}) == 20 + 1
    assert consent.cached(db, ["p0"]) == {"p0": Choice(restrict_sensitive=True)}


def test_a_choice_stored_but_never_noted_is_read_once_a_process_starts(
        watched, monkeypatch, settings) -> None:
    """A worker killed between storing a choice and noting it: the worker started in
    its place notes a change it cannot name, so the others read the choices whole."""
    from tests.conftest import make_app

    db, finds = watched
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    assert consent.cached(db, ["p1"]) == {}
    db[consent.CONSENTS].insert_one({"_id": "p1", "opt_out": True})  # stored, not noted
    assert consent.cached(db, ["p1"]) == {}
    restarted = make_app(settings)
    try:
        finds.seen.clear()
        assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}
        assert finds.seen["_consents whole"] == 1
    finally:
        restarted.extensions["fhirserver"].repo.close()


def test_choices_written_around_the_log_are_read_within_reload(watched, monkeypatch) -> None:
    """A choice no note names (its note failed; a restored collection) is read within
    RELOAD seconds."""
    db, _ = watched
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    assert consent.cached(db, ["p1"]) == {}
    db[consent.CONSENTS].insert_one({"_id": "p1", "share_with_family": True})
    assert consent.cached(db, ["p1"]) == {}
    monkeypatch.setattr(consent, "RELOAD", 0.0)
    assert consent.cached(db, ["p1"]) == {"p1": Choice(share_with_family=True)}


def test_concurrent_changes_take_distinct_numbers_without_a_gap(watched) -> None:
    """FerretDB 1.x does not isolate ``$inc`` (auth/lookups.py): numbers are taken by
    inserting the note, so writers at the same moment never share one, none is
    skipped, and a reader names every change."""
    db, _ = watched
    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(lambda i: changes.record(db, "c", f"k{i}"), range(120)))
    assert sorted(numbers) == list(range(1, 121))
    newest = changes.newest(db, "c")
    assert newest.number == 120 and newest.epoch and newest.nonce
    by_number = sorted((n, f"k{i}") for i, n in enumerate(numbers) if n > 100)
    note_100 = db[changes.log_collection("c")].find_one({"_id": "c#100"})
    assert changes.changed_since(db, "c", changes.Position(100, newest.epoch, note_100["nonce"])) \
        == (newest, [k for _, k in by_number])


def test_concurrent_choices_of_many_patients_are_all_read(watched, monkeypatch) -> None:
    db, _ = watched
    monkeypatch.setattr(consent, "REFRESH", 60.0)
    assert consent.cached(db, ["p0"]) == {}
    held = dataclasses.replace(consent._cache[consent._cache_key(db)])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: consent.save(db, f"p{i}", Choice(opt_out=True)), range(40)))
    consent._cache[consent._cache_key(db)] = held  # as the other workers hold it
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    assert consent.cached(db, [f"p{i}" for i in range(40)]) == {
        f"p{i}": Choice(opt_out=True) for i in range(40)}


def test_a_request_waits_for_a_refresh_only_past_stale_and_then_fails_503(
        watched, monkeypatch) -> None:
    """One thread refreshes at a time. While it does, the others answer from what is
    held if it is younger than STALE; older, they wait, and fail with 503 after
    WAIT rather than answer from older choices."""
    from fhirserver import errors

    db, _ = watched
    consent.save(db, "p1", Choice(opt_out=True))
    assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}
    held = consent._cache[consent._cache_key(db)]
    monkeypatch.setattr(consent, "WAIT", 0.2)
    with consent._refreshing:  # another thread's refresh, hung
        held.looked = time.monotonic() - consent.REFRESH - 0.5
        assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}
        held.looked = time.monotonic() - consent.STALE - 0.5
        with pytest.raises(errors.Unavailable):
            consent.cached(db, ["p1"])
    assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}


def test_a_log_begun_again_makes_the_reader_read_whole(watched, monkeypatch) -> None:
    """The notes numbered again from 1 (the log dropped and begun again): the log's
    epoch changed, and the reader reads the choices whole, not only new notes."""
    db, _ = watched
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    for i in range(5):
        consent.save(db, f"p{i}", Choice(opt_out=True))
    assert consent.cached(db, ["p0"]) == {"p0": Choice(opt_out=True)}
    db.drop_collection(changes.log_collection(consent.CONSENTS))
    saved_elsewhere(db, "p9", Choice(restrict_sensitive=True))  # note 1 of the new log
    assert consent.cached(db, ["p9"]) == {"p9": Choice(restrict_sensitive=True)}


def test_a_choice_whose_note_failed_is_read_whole_by_every_process(watched, monkeypatch) -> None:
    """Stored, but its note could not be written (the answer is an error): the
    writer notes a change it cannot name, so every process reads the choices whole,
    and its own process does so at its next look even if that note fails too."""
    db, _ = watched
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    assert consent.cached(db, ["p1"]) == {}
    real = changes.record

    def fails_named(db: Any, collection: str, key: str | None) -> int:
        if key is not None:
            raise ConnectionError("the note was not written")
        return real(db, collection, key)

    held = dataclasses.replace(consent._cache[consent._cache_key(db)])
    monkeypatch.setattr(changes, "record", fails_named)
    with pytest.raises(ConnectionError):
        consent.save(db, "p1", Choice(opt_out=True))
    mine = consent._cache[consent._cache_key(db)]
    consent._cache[consent._cache_key(db)] = held  # as another process holds it
    assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}

    def fails(db: Any, collection: str, key: str | None) -> int:
        raise ConnectionError("no note is written")

    consent._cache[consent._cache_key(db)] = mine
    monkeypatch.setattr(changes, "record", fails)
    with pytest.raises(ConnectionError):
        consent.save(db, "p1", Choice(restrict_sensitive=True))
    assert consent.cached(db, ["p1"]) == {"p1": Choice(restrict_sensitive=True)}


def test_a_worker_that_looked_before_the_first_note_follows_the_log(watched, monkeypatch) -> None:
    """Choices read before any was noted: the first notes are read one by one, and
    the log's epoch learnt with them, not taken for a log begun again."""
    db, finds = watched
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    assert consent.cached(db, ["p1"]) == {}
    saved_elsewhere(db, "p1", Choice(opt_out=True))
    for _ in range(3):
        assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}
    assert finds.seen["_consents whole"] == 1  # the first look's


def test_a_choice_saved_while_the_lock_is_busy_is_read_by_its_own_process_at_once(
        watched, monkeypatch) -> None:
    """The note is written, but another thread held the cache past WAIT: the writer's
    own process reads the choices whole at its next look, not after REFRESH."""
    from tests.auth.test_reach_cache import held_elsewhere

    db, _ = watched
    monkeypatch.setattr(consent, "REFRESH", 60.0)
    assert consent.cached(db, ["p1"]) == {}
    monkeypatch.setattr(consent, "WAIT", 0.1)
    with held_elsewhere(consent._refreshing):
        consent.save(db, "p1", Choice(opt_out=True))
    assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}
