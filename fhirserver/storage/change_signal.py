"""A file that tells the processes of one server that a change log has news.

A process keeps what it read of a collection and reads the collection's change log
(:mod:`.changes`) every few seconds for what others changed. Between two looks it
answers from what it holds, and a change another worker made meanwhile is unknown to
it: a clinician's break-the-glass in one worker was, for up to two seconds, a
treating relationship to the other. The processes of one server share a data
directory, so whoever notes a change there also writes new bytes into a small file
beside it; a reader compares them with what they were when it last read the change
log, one ``pread(2)`` per request, and reads the log again at once when they differ.

The file only says "look now", never what changed: a signal lost (a writer killed
between noting and signalling, a file that could not be written) leaves the readers
to their next timed look, as before, or to the start of the killed worker's
replacement, which notes a change nobody can name and signals it. A change made by a process that does not share the directory (another
server on the same database) is not signalled at all, which is why only a database
that the server's own processes alone write (the embedded one) may rely on it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: The file's content: random, so that a new value is never one a reader holds.
SIZE = 8


class ChangeSignal:
    """The file ``path``, opened in each process for itself (a descriptor inherited
    across ``fork`` is shared with the parent), and opened again when the file at the
    path is no longer the one open: deleted, or replaced, a process that opened the new
    one must not signal into a file the others no longer read, nor they read one it no
    longer writes. Each use is a ``stat`` and a ``pread`` or ``pwrite``, under a lock:
    the descriptor is closed only when no other thread uses it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0
        self._lock = threading.Lock()
        #: this process's last signal could not be written: until one is, what it
        #: reads proves nothing (the others do not know of its change either)
        self._failed = False

    def _descriptor(self) -> int:
        """Under the lock: the descriptor of the file now at the path (OSError: none)."""
        if self._fd is not None and self._pid == os.getpid():
            try:
                if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                    return self._fd
            except OSError:
                pass
            os.close(self._fd)
        self._fd = None
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pid = os.getpid()
        return self._fd

    def read(self) -> bytes | None:
        """The current value; None when the file cannot be read, or this process's
        last signal was lost (then nothing may be concluded from it)."""
        with self._lock:
            if self._failed:
                return None
            try:
                return os.pread(self._descriptor(), SIZE, 0)
            except OSError:
                return None

    def bump(self) -> None:
        """Tell every reader to look: a write of ``SIZE`` bytes at the start of the
        file, which a concurrent ``pread`` sees before or after, never in part, on a
        local file system; a torn value would only make a reader look once more."""
        with self._lock:
            try:
                os.pwrite(self._descriptor(), os.urandom(SIZE), 0)
                self._failed = False
            except OSError:
                if not self._failed:
                    log.error("the change signal %s could not be written: the other "
                              "workers learn of this process's changes at their next "
                              "timed look", self.path)
                self._failed = True


def path_of(data_dir: Path | str, name: str) -> Path:
    """The signal of change log ``name`` in a server's data directory."""
    return Path(data_dir).absolute() / f"{name}.signal"
