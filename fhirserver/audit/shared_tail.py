"""The audit chain's end, shared by the processes of one server.

Every worker process appends to the one chain (:mod:`.appender`), and each knows
only the end it wrote last. When another worker wrote since, the database refuses
the record number and the worker probes for the real end (:func:`.chain.tail`) and
writes again: with two workers under load that was about one refused insert and
two probes per request, each refusal also logged by both database servers. So the
processes of one server keep the end in a small file under an exclusive
``flock(2)``, held while a group is chained and inserted: the next leader, in any
process, links to the real end at once, and the groups of concurrent processes go
one after another instead of colliding.

The file is a hint, never trusted over the database: a record number is still
claimed by its primary key, so another server appending to the same database is
caught as before. The file names the chain it belongs to by the link of record 1
(a database dropped and made again under the same name starts another chain), and
a file that cannot be read whole is ignored. The lock is released by the kernel
when its holder dies, so a ``kill -9`` leaves nobody waiting.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import Settings

_FORMAT = re.compile(rb"([0-9a-f]{64}) ([0-9]{12}) ([0-9a-f]{64})\n")


def path_of(settings: Settings, database: str) -> Path:
    """The file of ``database``'s chain in the server's data directory."""
    return Path(settings.data_dir).absolute() / f"audit-{database}.tail"


class SharedTail:
    """The file ``path``; one instance per appender. Opened lazily in each process
    (a descriptor inherited across ``fork`` would share its lock with the parent)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0

    def _descriptor(self) -> int | None:
        if self.path is None:
            return None
        if self._fd is None or self._pid != os.getpid():
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                self.path = None  # not writable here: appending works without it
                return None
            self._pid = os.getpid()
        return self._fd

    @contextmanager
    def held(self) -> Iterator[Held]:
        """The file under an exclusive lock, for one group's chaining and insert."""
        fd = self._descriptor()
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                fd = None
        try:
            yield Held(fd)
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)


class Held:
    """The locked file: the end it records, and a new end to record."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def read(self, origin: str) -> tuple[int, str] | None:
        """The end recorded for the chain whose record 1 links ``origin``, if any."""
        if self._fd is None:
            return None
        try:
            data = os.pread(self._fd, 256, 0)
        except OSError:
            return None
        found = _FORMAT.fullmatch(data)
        if found is None or found.group(1).decode() != origin:
            return None
        return int(found.group(2)), found.group(3).decode()

    def write(self, origin: str, seq: int, link: str) -> None:
        """Record ``seq`` and its ``link`` as the end: one ``pwrite`` of a line of
        fixed size (and the file cut to it, should anything else have been there)."""
        if self._fd is None:
            return
        data = f"{origin} {seq:012d} {link}\n".encode()
        if _FORMAT.fullmatch(data) is None:
            return  # a link of another shape (none is): not recorded
        try:
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError:
            pass
