"""CPU time the server's processes spend per request, by kind of process.

On a shared two-core machine the latency and throughput of a row move with what the
host gives the machine that minute; the CPU a request costs moves much less, and it
says where that cost sits: in the server's Python workers, in FerretDB, or in
PostgreSQL. Read from ``/proc`` for the server running on this machine: the process
that listens on the bench URL's port, the process that started it, and everything
below them. A process's own times plus those of its children that it has reaped
count, so PostgreSQL backends that end during a row are not lost.
"""

from __future__ import annotations

import os
from pathlib import Path

KINDS = ("python", "ferretdb", "postgresql")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp
AUTOVACUUM = "postgres: autovacuum worker"


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return int(fields[1]), (utime + stime + cutime + cstime) / _TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kind(pid: int) -> str:
    cmd = _cmdline(pid)
    if "ferretdb" in cmd.split(" ", 1)[0]:
        return "ferretdb"
    if cmd.startswith("postgres") or "/bin/postgres " in cmd:
        return "postgresql"
    return "python"


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        stat = _stat(pid)
        if stat is None:
            return False
        pid = stat[0]
    return False


def _listening(port: int) -> set[str]:
    """The sockets (as /proc/*/fd links read) that listen on TCP ``port``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[1].rsplit(":", 1)[1] == f"{port:04X}" and cols[3] == _LISTEN:
                inodes.add(f"socket:[{cols[9]}]")
    return inodes


def _holds(pid: int, sockets: set[str]) -> bool:
    try:
        return any(os.readlink(fd) in sockets for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


class ServerCpu:
    """Samples of the CPU seconds of a local server's process tree, by kind."""

    @classmethod
    def of_database(cls, data_dir: Path, owner: int) -> ServerCpu:
        """The embedded database of ``data_dir`` that process ``owner`` started: its
        FerretDB, its PostgreSQL and PostgreSQL's backends. Another process's
        database (``owner`` attached to it) would count that process's load too, so
        it is refused, as is a database of another directory whose name merely
        starts with this one's."""
        mark = f"{Path(data_dir).resolve()}/postgresql/"
        roots = {p for p in _pids() if _kind(p) != "python" and mark in _cmdline(p)
                 and _descends(p, owner)}
        if not roots:
            raise LookupError(f"no embedded database of {data_dir} started by process {owner}")
        meter = cls.__new__(cls)
        meter.roots = roots
        return meter

    def __init__(self, port: int) -> None:
        sockets = _listening(port)
        holders = {p for p in _pids() if sockets and _holds(p, sockets)}
        if not holders:
            raise LookupError(f"no process on this machine listens on port {port}")
        # gunicorn's workers hold the listening socket too: the server is the holder
        # whose parent holds none (``fhirserver serve``, gunicorn's arbiter).
        parents = {p: s[0] for p in holders if (s := _stat(p)) is not None}
        self.roots = {min(p for p in holders if parents.get(p) not in holders)}

    def _tree(self) -> tuple[set[int], dict[int, float]]:
        """The server's processes now, and the CPU seconds of every process."""
        parents: dict[int, int] = {}
        seconds: dict[int, float] = {}
        for p in _pids():
            s = _stat(p)
            if s is not None:
                parents[p], seconds[p] = s
        tree, below = set(self.roots), set(self.roots)
        while below:
            below = {p for p, parent in parents.items() if parent in below} - tree
            tree |= below
        return tree, seconds

    def sample(self) -> dict[str, float]:
        """CPU seconds so far of every process in the server's tree, by kind."""
        tree, seconds = self._tree()
        out = dict.fromkeys(KINDS, 0.0)
        for p in tree:
            if p in seconds:
                out[_kind(p)] += seconds[p]
        return out

    def maintenance(self) -> list[str]:
        """The server's PostgreSQL autovacuum workers at work now (``autovacuum worker
        ferretdb``). After an import, or rows that wrote, PostgreSQL vacuums and
        analyses the grown tables for a minute or more; a row timed meanwhile would
        count that work as its own, and its latencies would queue behind it."""
        return [cmd.strip() for p in self._tree()[0]
                if (cmd := _cmdline(p)).startswith(AUTOVACUUM)]
