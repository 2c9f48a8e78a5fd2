"""The embedded database's front: a FerretDB child process on a loopback port.

No MongoDB server can be installed on development and CI machines, so when no
``MONGODB_URI`` is given the server and the tests run FerretDB (a MongoDB
wire-protocol server) on the embedded PostgreSQL of :mod:`.postgres`. The code above
this module talks to it through pymongo exactly as it would to MongoDB.

Nobody but the server's own user reads its files: the state directory is made 0700
(tightened when it already exists, its files 0600), the child runs with umask 077,
and its log file is 0600 too.

The child must never outlive its parent: an orphaned FerretDB would keep its
database connections open and a port bound. It is stopped by :meth:`EmbeddedFerretDB.stop`,
at interpreter exit, and on Linux the kernel sends it SIGTERM when the parent dies
in any other way (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from ..config import PROJECT_ROOT, child_environment

log = logging.getLogger(__name__)
SETUP_HINT = "run `bash scripts/setup.sh` to build it into .tools/bin/ferretdb"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LOG_NAME = "ferretdb.log"
_PR_SET_PDEATHSIG = 1
PRIVATE_UMASK = 0o077


def private_directory(path: Path) -> None:
    """Create ``path`` (mode 0700), or tighten it and the files in it to the owner."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.chmod(path, 0o700)
        for entry in path.iterdir():
            if entry.is_file() and not entry.is_symlink() and entry.stat().st_mode & 0o077:
                os.chmod(entry, 0o600)
    except PermissionError as exc:  # not ours to change: say so, the owner must
        log.warning("cannot restrict %s to its owner: %s", path, exc)


def private_file(path: Path, mode: str = "ab") -> IO[Any]:
    """``open(path, mode)`` for a file only the owner reads (0600, also when it exists)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, mode)


def log_tail(path: Path, offset: int, lines: int = 30) -> str:
    """The last ``lines`` a child wrote to its log after ``offset``, for an error message."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


class FerretDBError(RuntimeError):
    """The embedded database could not be found, started or stopped."""


class FerretDBNotFound(FerretDBError):
    """No FerretDB binary where the settings, the project or PATH point."""


def find_binary(explicit: str = "") -> str:
    """Locate the FerretDB binary.

    Order: ``explicit`` (the ``ferretdb_bin`` setting), ``FERRETDB_BIN``, the
    project's ``.tools/bin/ferretdb``, then ``ferretdb`` on PATH. A binary that was
    named explicitly and is missing is an error, not a reason to fall back.
    """
    for source, named in (
        ("ferretdb_bin", explicit),
        ("FERRETDB_BIN", os.environ.get("FERRETDB_BIN", "")),
    ):
        if named:
            found = _executable(named)
            if found is None:
                raise FerretDBNotFound(
                    f"FerretDB binary {named!r} (from {source}) not found; {SETUP_HINT}"
                )
            return found
    local = PROJECT_ROOT / ".tools" / "bin" / "ferretdb"
    if os.access(local, os.X_OK) and local.is_file():
        return str(local)
    on_path = shutil.which("ferretdb")
    if on_path:
        return on_path
    raise FerretDBNotFound(
        f"FerretDB binary not found (looked in {local} and on PATH); {SETUP_HINT}"
    )


def _executable(name: str) -> str | None:
    if os.sep in name or (os.altsep and os.altsep in name):
        path = Path(name).expanduser()
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(name)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent(libc: ctypes.CDLL, parent_pid: int) -> None:
    """Runs in the child between fork and exec: ask for SIGTERM when the parent dies.

    ``libc`` is loaded by the parent so the child does as little as possible
    before exec.
    """
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


#: FerretDB's garbage collector target (Go's GOGC). FerretDB 1.x builds every result
#: document twice (from PostgreSQL's JSON, then as BSON) and drops both at once; at
#: Go's default of 100 the collector took about a fifth of its CPU under the search
#: benchmark, and 400 made a 103-document read about 15% faster. The heap it keeps is
#: a few tens of MB, so the memory it costs is small.
GOGC = "400"


def _environment() -> dict[str, str]:
    """The environment FerretDB runs with: ours without secrets, with GOGC unless one
    is set."""
    env = child_environment()
    env.setdefault("GOGC", GOGC)
    return env


class EmbeddedFerretDB:
    """One FerretDB process serving the PostgreSQL database at ``postgresql_url``,
    keeping its state in ``data_dir``.

    With a ``socket`` it listens on that Unix socket only (FerretDB asks nobody for a
    password, so a loopback port would let every local user in; the socket's 0700
    directory lets in only the owner). Otherwise, without a ``port``, each start takes
    a free loopback port. Several instances can run side by side, each on a database
    of its own (FerretDB caches what it knows of the collections).
    """

    def __init__(self, data_dir: Path, postgresql_url: str, binary: str | None = None,
                 port: int | None = None, socket: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.postgresql_url = postgresql_url
        self.socket = socket
        self._binary = binary
        self._requested_port = port
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        """The mongodb:// URI of the running instance."""
        if self._port is None or not self.running:
            raise FerretDBError("FerretDB is not running; call start() first")
        return self._address()

    def _address(self) -> str:
        if self.socket is not None:
            return f"mongodb://{quote(str(self.socket.resolve()), safe='')}/"
        return f"mongodb://127.0.0.1:{self._port}/"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    def start(self) -> str:
        """Start the process (if not running), wait until it answers ``ping``, return its URI."""
        with self._lock:
            if self.running:
                return self.uri
            binary = find_binary(self._binary or "")
            private_directory(self.data_dir)
            # A port picked here could be taken before FerretDB binds it; try again then.
            attempts = 1 if self._requested_port else 3
            for attempt in range(attempts):
                port = self._requested_port or free_port()
                log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
                if self.socket is not None:
                    self.socket.unlink(missing_ok=True)  # left by a killed instance
                self._process = self._spawn(binary, port)
                self._port = port
                atexit.register(self.stop)
                try:
                    self._wait_ready(log_offset)
                    return self.uri
                except FerretDBError:
                    self._terminate()
                    if attempt + 1 == attempts:
                        raise
            raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the process, gracefully first; a no-op when it is not running."""
        with self._lock:
            self._terminate()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, binary: str, port: int) -> subprocess.Popen[bytes]:
        data = self.data_dir.resolve()
        args = [
            binary,
            "--handler=postgresql",
            f"--postgresql-url={self.postgresql_url}",
            *([f"--listen-unix={self.socket.resolve()}", "--listen-addr="]
              if self.socket is not None else [f"--listen-addr=127.0.0.1:{port}"]),
            f"--state-dir={data}",
            "--telemetry=disable",
            "--debug-addr=-",
            "--log-level=error",
            "--log-format=text",
        ]
        preexec = None
        # PDEATHSIG fires when the forking *thread* exits, so it is only safe when
        # the main thread starts the process; otherwise atexit has to do.
        if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
            parent = os.getpid()
            libc = ctypes.CDLL(None, use_errno=True)

            def preexec() -> None:
                _die_with_parent(libc, parent)

        with private_file(self.log_path) as log:
            try:
                return subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=data,
                    preexec_fn=preexec,  # noqa: PLW1509 - main thread only, see above
                    close_fds=True,
                    umask=PRIVATE_UMASK,
                    env=_environment(),
                )
            except OSError as exc:
                raise FerretDBError(
                    f"could not run FerretDB {binary!r}: {exc}; {SETUP_HINT}"
                ) from exc

    def _wait_ready(self, log_offset: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        client: MongoClient[dict[str, object]] = MongoClient(
            self._address(),
            serverSelectionTimeoutMS=250,
            connectTimeoutMS=250,
            directConnection=True,
        )
        try:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise FerretDBError(
                        f"FerretDB exited with code {code} during start-up; its log:\n"
                        + self._log_tail(log_offset)
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    pass
                if time.monotonic() > deadline:
                    raise FerretDBError(
                        f"FerretDB did not answer on port {self._port} within {START_TIMEOUT:.0f} s;"
                        " its log:\n" + self._log_tail(log_offset)
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def _log_tail(self, offset: int) -> str:
        return log_tail(self.log_path, offset)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        self._port = None
        atexit.unregister(self.stop)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
