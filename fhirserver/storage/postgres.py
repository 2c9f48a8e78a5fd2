"""The embedded database's engine: a PostgreSQL child process on a private socket.

FerretDB 1.x on SQLite filters every query in Go after reading the whole collection;
on PostgreSQL it sends a query's top-level equality clauses to the database, where
the GIN indexes of :mod:`.postgres_indexes` answer them (DESIGN.md section 5). The
PostgreSQL comes from the PyPI package ``pgserver`` (its ``initdb``, ``postgres`` and
``pg_ctl``), so no system package and no root are needed.

Nobody but the server's own user reaches the data: the cluster lives in
``<data_dir>/postgresql`` (0700), PostgreSQL listens on no TCP port at all, only on a
Unix socket in a 0700 directory beside it, so ``trust`` authentication on that socket
admits the owner alone.

PostgreSQL refuses to run as root. When the server runs as root (containers, CI) the
cluster is run in a user namespace of its own (``unshare(CLONE_NEWUSER)`` without a
mapping): inside it the process is unprivileged, the files it creates still belong to
the real owner, and it holds no capability over anything else on the host.

Like the FerretDB child, the process dies with its parent (``PR_SET_PDEATHSIG``, set
after the namespace change, which would otherwise clear it) and a cluster left
running by a killed parent is stopped before a new one starts.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

from ..config import child_environment
from .ferretdb import PRIVATE_UMASK, FerretDBError, log_tail, private_directory, private_file

log = logging.getLogger(__name__)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
DATABASE = "ferretdb"
USER = "fhir"
#: pg_isready's status for a server that is up but not accepting connections yet.
PQPING_REJECT = 1
_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1
#: Settings of the embedded cluster. Commits are durable (fsync at commit, the
#: audit log's promise); ``plan_cache_mode`` makes PostgreSQL plan each of
#: FerretDB's parameterised statements for its values, without which the path
#: parameter never matches an expression index (DESIGN.md section 5).
SERVER_SETTINGS = (
    "listen_addresses=",
    "shared_buffers=128MB",
    "work_mem=16MB",
    "max_connections=200",
    "plan_cache_mode=force_custom_plan",
    # FerretDB keeps each document in one jsonb column, which PostgreSQL moves out of
    # line (TOAST) once it passes ~2 KB: most resources. The planner does not count the
    # cost of fetching and decompressing that value for every row a scan filters, so on
    # a table of a few hundred Patients it chose to read them all (11 ms) over the GIN
    # index that finds the one asked for (0.9 ms). Every query the server sends is
    # meant to be answered from an index (storage/postgres_indexes.py), so a scan is
    # only the last resort here, taken when no index applies.
    "enable_seqscan=off",
    "random_page_cost=1.1",
    "jit=off",
    "synchronous_commit=on",
    "wal_level=minimal",
    "max_wal_senders=0",
    "checkpoint_timeout=15min",
    "max_wal_size=1GB",
    # The log names no value: a unique-key error's DETAIL line would quote the key,
    # which may be an identity number.
    "log_min_messages=warning",
    "log_min_error_statement=panic",
    "log_error_verbosity=terse",
    "log_checkpoints=off",
)

#: For a scratch cluster (the test suite's): nothing waits for the disk. A crash of
#: a process still loses nothing (the operating system has the writes); a crash of
#: the machine may lose the cluster, which is then thrown away anyway. Its log keeps
#: the DETAIL lines: they hold a statement's parameters, without which the suite
#: cannot plan again what FerretDB sent (tests/seq_scans.py); its data is made up.
SCRATCH_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off",
                    "log_error_verbosity=default")


class PostgresError(FerretDBError):
    """The embedded PostgreSQL could not be found, initialised, started or stopped."""


def binaries() -> Path:
    """The directory of PostgreSQL's programs installed by the ``pgserver`` package.

    Found without importing the package (its import does work of its own)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the Python package 'pgserver' is not installed; "
                            "run `bash scripts/setup.sh`")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "postgres").is_file():
        raise PostgresError(f"no PostgreSQL programs in {bindir}")
    return bindir


def _child_setup(libc: ctypes.CDLL | None, parent: int | None, own_namespace: bool) -> None:
    """Runs in the child between fork and exec: leave root behind, then ask to die
    with the parent (a namespace change clears an earlier request)."""
    if own_namespace and libc is not None and libc.unshare(_CLONE_NEWUSER) != 0:
        os.write(2, b"unshare(CLONE_NEWUSER) failed: PostgreSQL cannot run as root\n")
        os._exit(71)
    if libc is not None and parent is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)


def process_state(pid: int) -> tuple[str, str] | None:
    """The state letter (``R``, ``S``, ``Z`` for a zombie...) and program name of
    process ``pid`` (``/proc/<pid>/stat``), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = stat.partition(" (")[2].rpartition(") ")
    return (rest.split(" ", 1)[0], name) if rest else None


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``directory``, reachable through a Unix socket only."""

    def __init__(self, directory: Path, durable: bool = True) -> None:
        self.directory = Path(directory)
        self.durable = durable
        self.cluster = self.directory / "cluster"
        self.socket_dir = self.directory / "run"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The libpq URL of the database FerretDB serves."""
        return f"postgresql://{USER}@/{DATABASE}?host={quote(str(self.socket_dir.resolve()))}"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgresql.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        with self._lock:
            if self.running:
                return self.url
            bindir = binaries()
            private_directory(self.directory)
            private_directory(self.socket_dir)
            if not (self.cluster / "PG_VERSION").exists():
                self._initdb(bindir)
            self._stop_stale(bindir)
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            args = [str(bindir / "postgres"), "-D", str(self.cluster),
                    "-k", str(self.socket_dir.resolve())]
            for setting in SERVER_SETTINGS + (() if self.durable else SCRATCH_SETTINGS):
                args += ["-c", setting]
            self._process = self._spawn(args, self.log_path)
            atexit.register(self.stop)
            try:
                self._wait_ready(bindir, offset)
                self._create_database(bindir)
            except PostgresError:
                self._terminate()
                raise
            return self.url

    def stop(self) -> None:
        with self._lock:
            self._terminate()

    # -- internals ------------------------------------------------------------------

    def _spawn(self, args: list[str], log_path: Path,
               wait: bool = False) -> subprocess.Popen[bytes]:
        own_namespace = os.geteuid() == 0
        libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
        parent = (os.getpid() if not wait and threading.current_thread() is threading.main_thread()
                  else None)

        def setup() -> None:
            _child_setup(libc, parent, own_namespace)

        with private_file(log_path) as out:
            try:
                return subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd=self.directory, preexec_fn=setup,  # noqa: PLW1509 - see _child_setup
                    close_fds=True, umask=PRIVATE_UMASK,
                    env=child_environment(LC_ALL="C", TZ="UTC"),
                )
            except OSError as exc:
                raise PostgresError(f"could not run {args[0]!r}: {exc}") from exc

    def _run(self, args: list[str], what: str) -> None:
        process = self._spawn(args, self.log_path, wait=True)
        if process.wait() != 0:
            raise PostgresError(f"{what} failed; the log {self.log_path} says:\n"
                                + self._log_tail(0))

    def _initdb(self, bindir: Path) -> None:
        log.info("creating the embedded PostgreSQL cluster in %s", self.cluster)
        self._run([str(bindir / "initdb"), "-D", str(self.cluster), "-U", USER, "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-instructions"], "initdb")

    def _stop_stale(self, bindir: Path) -> None:
        """A cluster whose parent was killed may still be running or shutting down:
        ask it for a fast shutdown and wait until it is gone (its socket is private,
        so it can only be ours). One that has exited but is not yet reaped (a zombie:
        after a ``kill -9`` of the server, its new parent, the init process, reaps it
        in its own time) still holds its process id, which postgres takes for a
        server running on the cluster: the start waits for it to go."""
        pid_file = self.cluster / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return  # no file, or not one postgres wrote
        found = process_state(pid)
        if found is None:
            return  # a stale file: postgres replaces it itself
        state, name = found
        if state == "Z":
            if name != "postgres":
                return  # the number was reused by a program that is not this cluster
        else:
            try:
                if Path(os.readlink(f"/proc/{pid}/cwd")).resolve() != self.cluster.resolve():
                    return  # the number was reused by a program that is not this cluster
                os.kill(pid, signal.SIGINT)
            except OSError:
                return  # gone meanwhile
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            if process_state(pid) is None:
                return
            time.sleep(0.1)
        raise PostgresError(f"a PostgreSQL (pid {pid}) still runs on {self.cluster}, or has "
                            "exited and was not reaped by its parent")

    def _wait_ready(self, bindir: Path, offset: int) -> None:
        """Wait until PostgreSQL accepts connections. While it answers "starting up"
        (replaying its write-ahead log after a crash) it is not timed out: stopping it
        would only make the next start replay the same log again."""
        deadline = time.monotonic() + START_TIMEOUT
        socket = self.socket_dir / ".s.PGSQL.5432"
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise PostgresError(f"PostgreSQL exited with code {code} during start-up; "
                                    "its log:\n" + self._log_tail(offset))
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-q", "-h", str(self.socket_dir.resolve()),
                 "-U", USER, "-d", "postgres"], check=False,
                env=child_environment()).returncode if socket.exists() else 2
            if ready == 0:
                return
            if ready == PQPING_REJECT:
                deadline = time.monotonic() + START_TIMEOUT
            if time.monotonic() > deadline:
                raise PostgresError(f"PostgreSQL did not start within {START_TIMEOUT:.0f} s; "
                                    "its log:\n" + self._log_tail(offset))
            time.sleep(0.05)

    def _create_database(self, bindir: Path) -> None:
        import psycopg

        with psycopg.connect(host=str(self.socket_dir.resolve()), user=USER, dbname="postgres",
                             autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                 (DATABASE,)).fetchone()
            if not found:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _log_tail(self, offset: int) -> str:
        return log_tail(self.log_path, offset)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)  # fast shutdown: end sessions, checkpoint
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
