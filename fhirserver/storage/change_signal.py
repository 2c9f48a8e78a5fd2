"""A file that tells the processes of one server that a change log has news.

A process keeps what it read of a collection and reads the collection's change log
(:mod:`.changes`) every few seconds for what others changed. Between two looks it
answers from what it holds, and a change another worker made meanwhile is unknown to
it: a clinician's break-the-glass in one worker was, for up to two seconds, a
treating relationship to the other. The processes of one server share a data
directory, so whoever notes a change there also writes new bytes into a small file
beside it; a reader compares them with what they were when it last read the change
log, one ``pread(2)`` per request, and reads the log again at once when they differ.

The file only says "look now", never what changed: losing it, or a writer killed
between noting and signalling, leaves the readers to their next timed look, as
before. A change made by a process that does not share the directory (another
server on the same database) is not signalled at all, which is why only a database
that the server's own processes alone write (the embedded one) may rely on it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

#: The file's content: random, so that a new value is never one a reader holds.
SIZE = 8


class ChangeSignal:
    """The file ``path``, opened lazily in each process (a descriptor inherited across
    ``fork`` is shared with the parent, offset and all)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _descriptor(self) -> int | None:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        with self._lock:  # one descriptor per process, however many threads ask at once
            if self._fd is None or self._pid != os.getpid():
                try:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                except OSError:
                    return None
                self._pid = os.getpid()
            return self._fd

    def read(self) -> bytes | None:
        """The current value; None when the file cannot be read (then nothing may be
        concluded from it)."""
        fd = self._descriptor()
        if fd is None:
            return None
        try:
            return os.pread(fd, SIZE, 0)
        except OSError:
            return None

    def bump(self) -> None:
        """Tell every reader to look: a write of ``SIZE`` bytes at the start of the
        file, which a concurrent ``pread`` sees before or after, never in part, on a
        local file system; a torn value would only make a reader look once more."""
        fd = self._descriptor()
        if fd is None:
            return
        try:
            os.pwrite(fd, os.urandom(SIZE), 0)
        except OSError:
            pass


def path_of(data_dir: Path | str, name: str) -> Path:
    """The signal of change log ``name`` in a server's data directory."""
    return Path(data_dir).absolute() / f"{name}.signal"
