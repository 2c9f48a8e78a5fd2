"""The embedded database (PostgreSQL behind FerretDB): start, stop, persistence,
ports, a missing binary, and children that do not outlive their parent."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo import MongoClient

from fhirserver.storage.embedded import EmbeddedDatabase
from fhirserver.storage.ferretdb import (
    EmbeddedFerretDB,
    FerretDBError,
    FerretDBNotFound,
    find_binary,
)

try:
    find_binary()
    HAVE_BINARY = True
except FerretDBNotFound:
    HAVE_BINARY = False

needs_binary = pytest.mark.skipif(
    not HAVE_BINARY, reason="FerretDB not built (bash scripts/setup.sh)"
)


def _client(uri: str) -> MongoClient[dict[str, object]]:
    return MongoClient(uri, serverSelectionTimeoutMS=5000)


@needs_binary
def test_start_answers_ping_and_stop_ends_the_process(tmp_path: Path) -> None:
    server = EmbeddedDatabase(tmp_path / "db", durable=False)
    uri = server.start()
    try:
        assert uri.startswith("mongodb://127.0.0.1:")
        assert server.start() == uri  # starting again is a no-op
        with _client(uri) as client:
            assert client.admin.command("ping")["ok"] == 1.0
    finally:
        server.stop()
    assert not server.ferretdb.running and not server.postgres.running
    with pytest.raises(FerretDBError):
        _ = server.uri
    server.stop()  # stopping twice is harmless


@needs_binary
def test_data_survives_a_restart_with_the_same_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "db"
    with EmbeddedDatabase(data_dir) as first, _client(first.uri) as client:
        client.fhir.patients.insert_one({"_id": "p1", "name": "Ada"})
    with EmbeddedDatabase(data_dir) as second, _client(second.uri) as client:
        assert client.fhir.patients.find_one({"_id": "p1"}) == {"_id": "p1", "name": "Ada"}
    assert (data_dir / "postgresql" / "cluster" / "PG_VERSION").exists()  # the cluster is there


@needs_binary
def test_two_instances_get_different_ports(tmp_path: Path) -> None:
    with EmbeddedDatabase(tmp_path / "a", durable=False) as a, \
            EmbeddedDatabase(tmp_path / "b", durable=False) as b:
        assert a.uri != b.uri
        with _client(a.uri) as ca, _client(b.uri) as cb:
            ca.x.c.insert_one({"_id": 1})
            assert cb.x.c.find_one({"_id": 1}) is None


def test_missing_explicit_binary_is_a_clear_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-ferretdb")
    with pytest.raises(FerretDBNotFound, match="scripts/setup.sh"):
        find_binary(missing)
    with pytest.raises(FerretDBNotFound, match="scripts/setup.sh"):
        EmbeddedFerretDB(tmp_path / "db", "postgresql://nowhere", binary=missing).start()


def test_missing_binary_everywhere_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fhirserver.storage.ferretdb as module

    monkeypatch.delenv("FERRETDB_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(module, "PROJECT_ROOT", tmp_path)
    with pytest.raises(FerretDBNotFound, match="bash scripts/setup.sh"):
        find_binary()


def test_a_binary_that_dies_at_start_reports_its_output(tmp_path: Path) -> None:
    fake = tmp_path / "ferretdb"
    fake.write_text("#!/bin/sh\necho 'cannot open the database' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(FerretDBError, match="(?s)code 3.*cannot open the database"):
        EmbeddedFerretDB(tmp_path / "db", "postgresql://nowhere", binary=str(fake)).start()


def test_mongo_uri_fixture_serves_a_fresh_database(mongo_uri: str, db_name: str) -> None:
    with _client(mongo_uri) as client:
        assert db_name.startswith("test_")
        assert client[db_name].things.count_documents({}) == 0
        client[db_name].things.insert_one({"_id": "a"})
        assert client[db_name].things.count_documents({}) == 1


KILLED_PARENT = """
import sys, time
from pathlib import Path
from fhirserver.storage.embedded import EmbeddedDatabase
db = EmbeddedDatabase(Path(sys.argv[1]), durable=False)
db.start()
print(db.postgres._process.pid, db.ferretdb._process.pid, flush=True)
time.sleep(600)
"""


@needs_binary
def test_kill_9_of_the_parent_ends_both_children_and_the_next_start_works(
        tmp_path: Path) -> None:
    """A server killed with SIGKILL leaves no PostgreSQL or FerretDB behind (they get
    SIGTERM from the kernel), and the cluster starts again on the same directory."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "db"
    parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(data)],
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()
                 and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
        time.sleep(0.1)
    assert alive == []
    with EmbeddedDatabase(data, durable=False) as again, _client(again.uri) as client:
        assert client.admin.command("ping")["ok"] == 1.0
    assert os.path.exists(data / "postgresql" / "cluster" / "PG_VERSION")
