"""The embedded database (PostgreSQL behind FerretDB): start, stop, persistence,
ports, a missing binary, and children that do not outlive their parent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pymongo import MongoClient

from fhirserver.storage.embedded import EmbeddedDatabase
from fhirserver.storage.ferretdb import (
    GOGC,
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
        # A Unix socket in a 0700 directory, no TCP port: FerretDB asks for no password.
        assert uri.startswith("mongodb://%2F") and uri.endswith(".sock/")
        socket_dir = server.postgres.socket_dir
        assert socket_dir.stat().st_mode & 0o777 == 0o700
        assert (socket_dir / "ferretdb.sock").exists()
        assert server.start() == uri  # starting again is a no-op
        with _client(uri) as client:
            assert client.admin.command("ping")["ok"] == 1.0
        # FerretDB collects garbage less often than Go's default (storage/ferretdb.py)
        # unless the operator sets GOGC.
        assert server.ferretdb._process is not None
        environ = Path(f"/proc/{server.ferretdb._process.pid}/environ").read_bytes()
        assert (b"GOGC=" + os.environ.get("GOGC", GOGC).encode()) in environ.split(b"\0")
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


@needs_binary
def test_a_second_command_on_a_busy_data_dir_uses_the_owners_database(tmp_path: Path) -> None:
    """Another command on the same data directory (a token, an import) while the
    server's database is slow to answer waits for it: it neither starts a second
    database on the same files nor stops the server's."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from fhirserver.config import Settings
    from fhirserver.storage.embedded import STATE_FILE, database

    data = tmp_path / "data"
    with database(Settings(data_dir=data, mongodb_db="fhir")) as live:
        owner_pg = (data / "postgresql" / "cluster" / "postmaster.pid").read_text().split()[0]
        ferret = int(next(p for p in os.listdir("/proc") if p.isdigit() and b"ferretdb" in
                          Path(f"/proc/{p}/cmdline").read_bytes()
                          and str(data).encode() in Path(f"/proc/{p}/cmdline").read_bytes()))
        os.kill(ferret, signal.SIGSTOP)
        threading.Timer(3.0, os.kill, (ferret, signal.SIGCONT)).start()
        env = {**os.environ, "FHIR_DATA_DIR": str(data)}
        env.pop("MONGODB_URI", None)
        done = subprocess.run(
            [str(Path(sys.executable).parent / "fhirserver"), "token", "--operator",
             "--scope", "system/*.rs"], env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert (data / STATE_FILE).exists()
        assert (data / "postgresql" / "cluster" / "postmaster.pid").read_text().split()[0] \
            == owner_pg
        with _client(str(live.mongodb_uri)) as client:
            assert client.admin.command("ping")["ok"] == 1.0


def test_records_stored_before_index_keys_are_found_after_an_upgrade(settings) -> None:  # type: ignore[no-untyped-def]
    """A database written by a version without ``k``/``b`` (search/keys.py,
    search/buckets.py), whose ``sp`` held every search value, is searchable after the
    next start: its records get keys and buckets; dropping the values the keys hold
    from ``sp`` (``serve`` does it once) changes no answer."""
    from zoneinfo import ZoneInfo

    from fhirserver.search.extract import extract
    from tests import factories as f
    from tests.conftest import FhirClient, make_app

    app = make_app(settings)
    fhir = FhirClient(app.test_client())
    pid = fhir.create(f.patient())["id"]
    observation = fhir.create(f.observation(pid, effectiveDateTime="2024-03-01"))
    oid = observation["id"]
    db = app.extensions["fhirserver"].repo.db
    legacy_sp = extract(observation, ZoneInfo(settings.timezone))
    assert "code" in legacy_sp and "subject" in legacy_sp
    db["Observation"].update_many({}, {"$unset": {"k": "", "b": ""}, "$set": {"sp": legacy_sp}})
    db["_months"].delete_many({})
    db["_schema"].delete_many({})
    before = fhir.get("Observation?code=15074-8")
    assert before.status_code == 200 and not before.get_json().get("entry")
    app.extensions["fhirserver"].repo.close()

    upgraded = make_app(settings)
    again = FhirClient(upgraded.test_client())
    queries = ("Observation?code=15074-8", f"Observation?patient={pid}&_sort=-date",
               "Observation?value-quantity=6.3", "Observation?date=2024-03-01",
               f"Observation?subject:Patient.name=chalmers&patient={pid}")
    for query in queries:
        found = again.get(query).get_json().get("entry", [])
        assert [e["resource"]["id"] for e in found] == [oid], query
    repo = upgraded.extensions["fhirserver"].repo
    assert repo.key_copies_pending()
    assert repo.drop_key_copies() == 1 and not repo.key_copies_pending()
    stored = repo.db["Observation"].find_one({"_id": oid})
    assert "code" not in stored["sp"] and "subject" not in stored["sp"]
    assert "code=15074-8" in stored["k"] and "date" in stored["sp"]
    for query in queries:
        found = again.get(query).get_json().get("entry", [])
        assert [e["resource"]["id"] for e in found] == [oid], query


def test_workers_starting_together_on_a_fresh_database_all_start(settings) -> None:  # type: ignore[no-untyped-def]
    """`fhirserver serve` starts several workers at once on a new database: each
    creates the collections and indexes it needs, and none fails because another
    worker created them a moment before."""
    from concurrent.futures import ThreadPoolExecutor

    from fhirserver.storage.repository import Repository

    def start(_: int) -> Repository:
        return Repository.from_settings(settings)

    with ThreadPoolExecutor(4) as pool:
        repos = list(pool.map(start, range(4)))
    assert all(r.db.command("ping")["ok"] == 1.0 for r in repos)
    for r in repos:
        r.close()


@needs_binary
def test_a_server_started_while_the_old_one_stops_waits_and_owns_the_database(
        tmp_path: Path) -> None:
    """A restart (the old server stopping, the new one starting at once) must not
    borrow the old server's database, which goes away a moment later: the new
    server waits for the old one to let go and then starts its own."""
    import threading
    import time

    from fhirserver.config import Settings
    from fhirserver.storage.embedded import database

    data = tmp_path / "data"
    settings = Settings(data_dir=data, mongodb_db="fhir")
    took: list[str] = []
    failed: list[BaseException] = []

    def new_server() -> None:
        try:
            with database(settings, own=True) as live:
                took.append(str(live.mongodb_uri))
                with _client(str(live.mongodb_uri)) as client:
                    client.fhir.marks.insert_one({"_id": "new"})
                    time.sleep(1)  # the old one has stopped by now: this one still answers
                    assert client.fhir.marks.find_one({"_id": "new"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    with database(settings) as old:
        thread = threading.Thread(target=new_server)
        thread.start()
        time.sleep(2)
        assert not took, "the new server used the old server's database"
        old_uri = str(old.mongodb_uri)
    thread.join(timeout=120)
    assert not failed, failed
    assert took and not thread.is_alive()
    assert took[0] == old_uri  # the same socket path, now the new server's own process


@needs_binary
def test_the_database_children_do_not_inherit_the_servers_secrets(tmp_path: Path) -> None:
    """PostgreSQL and FerretDB never need the master key or the card signing key, and
    a process's environment can be read in /proc/<pid>/environ while it runs: they
    start without them, and with the rest of the server's environment."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "FHIR_MASTER_KEY": "master-secret-value",
           "FHIR_CARD_SIGNING_KEY": "card-secret-value", "FHIR_CHILD_MARKER": "inherited"}
    parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(tmp_path / "db")],
                              stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"FHIR_CHILD_MARKER=inherited" in environ
            assert not [v for v in environ if b"secret-value" in v]
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
