"""The embedded PostgreSQL's start after its server was killed (``kill -9`` of the
whole process group): the old postmaster may have exited and not yet been reaped."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fhirserver.storage.postgres import EmbeddedPostgres, process_state


def _zombie(tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    """A child named ``name`` that has exited and is not reaped until ``wait``."""
    program = tmp_path / name
    shutil.copy(shutil.which("true") or "/bin/true", program)
    child = subprocess.Popen([str(program)])
    for _ in range(200):
        if (process_state(child.pid) or ("", ""))[0] == "Z":
            return child
        time.sleep(0.01)
    raise AssertionError("the child did not exit")


def _cluster_of(tmp_path: Path, pid: int) -> EmbeddedPostgres:
    pg = EmbeddedPostgres(tmp_path / "pg")
    pg.cluster.mkdir(parents=True)
    (pg.cluster / "postmaster.pid").write_text(f"{pid}\n{pg.cluster}\n")
    return pg


def test_a_start_waits_for_an_exited_postmaster_to_be_reaped(tmp_path: Path) -> None:
    """postgres refuses to start while the process id in postmaster.pid exists, which
    a zombie's does: the start waits until it is reaped, then goes on."""
    child = _zombie(tmp_path, "postgres")
    pg = _cluster_of(tmp_path, child.pid)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (pg._stop_stale(Path()), done.set()), daemon=True)
    waiter.start()
    time.sleep(0.5)
    assert not done.is_set(), "the start went on while the old postmaster's pid was taken"
    child.wait()
    assert done.wait(5), "the start did not go on once the old postmaster was reaped"


@pytest.mark.parametrize("name", ["sleep", "postgres-not"])
def test_a_zombie_of_another_program_under_the_number_does_not_hold_the_start(
        tmp_path: Path, name: str) -> None:
    child = _zombie(tmp_path, name)
    try:
        pg = _cluster_of(tmp_path, child.pid)
        started = time.monotonic()
        pg._stop_stale(Path())
        assert time.monotonic() - started < 1
    finally:
        child.wait()
