"""Group commit of the audit log (``audit/appender.py``) against the real database:
concurrent appends share writes yet keep one keyed chain that verifies, with every
record once and each writer's records in its own order; appenders of different
processes (here: different clients) race through the primary key; a failed write
fails every request waiting on it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pymongo import MongoClient

from fhirserver.audit.appender import Appender
from fhirserver.audit.chain import RECORDS, AuditUnavailable, Keys, event_of, verify
from fhirserver.crypto.master import read_or_create
from fhirserver.storage.ferretdb import free_port


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys.derive(read_or_create(tmp_path / "master.key"))


@pytest.fixture
def client(mongo_uri: str):  # type: ignore[no-untyped-def]
    with MongoClient(mongo_uri) as c:
        yield c


def event(name: str) -> dict:
    return {"resourceType": "AuditEvent", "action": "R", "outcomeDesc": name}


def run_threads(count: int, work: Callable[[int], None]) -> None:
    """``work(n)`` in ``count`` threads started together; re-raises the first failure."""
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def body(n: int) -> None:
        try:
            start.wait()
            work(n)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "an append never returned"
    if failures:
        raise failures[0]


def stored(db) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """The stored records by their event's outcomeDesc; fails on a record stored twice."""
    by_name: dict[str, dict] = {}
    for doc in db[RECORDS].find({}):
        name = event_of(doc)["outcomeDesc"]
        assert name not in by_name, f"{name} was stored twice"
        by_name[name] = doc
    return by_name


def assert_in_each_writers_order(numbers: dict[tuple[str, int], int], docs: dict[str, dict]) -> None:
    """Every append returned the number it is stored under, and each writer's records
    are numbered in the order it appended them."""
    writers = {w for w, _ in numbers}
    for writer in writers:
        mine = sorted((i, n) for (w, i), n in numbers.items() if w == writer)
        assert [n for _, n in mine] == sorted(n for _, n in mine), writer
        for i, n in mine:
            doc = docs[f"{writer}-{i}"]
            assert int(doc["_id"]) == n and event_of(doc)["id"] == f"audit-{n}"
            assert doc["patients"] == [writer]


def test_concurrent_appends_share_writes_and_keep_one_chain(client, db_name, keys, tmp_path):
    db, checkpoints = client[db_name], tmp_path / "checkpoints.log"
    appender = Appender(db)
    threads, each = 8, 25
    numbers: dict[tuple[str, int], int] = {}

    def writer(n: int) -> None:
        for i in range(each):
            numbers[(f"t{n}", i)] = appender.append(event(f"t{n}-{i}"), [f"t{n}"], keys, checkpoints)

    run_threads(threads, writer)
    total = threads * each
    report = verify(db, keys, [checkpoints])
    assert report.broken is None and report.checked == total and report.checkpoint == total
    docs = stored(db)
    assert set(docs) == {f"t{n}-{i}" for n in range(threads) for i in range(each)}
    assert sorted(numbers.values()) == list(range(1, total + 1))
    assert_in_each_writers_order(numbers, docs)
    # One checkpoint line per record, and fewer writes than records: requests that
    # arrived while a group was being written went together in the next one.
    assert len(checkpoints.read_text().splitlines()) == total
    assert appender.records == total and appender.groups < total


def test_two_appenders_on_one_database_race_and_keep_one_chain(mongo_uri, client, db_name, keys,
                                                               tmp_path):
    """Two appenders with their own clients, as two worker processes have: the primary
    key decides each record number, the loser re-chains its group after the new end."""
    checkpoints = tmp_path / "checkpoints.log"
    with MongoClient(mongo_uri) as other:
        appenders = [Appender(client[db_name]), Appender(other[db_name])]
        threads, each = 6, 15
        numbers: dict[tuple[str, int], int] = {}

        def writer(n: int) -> None:
            appender = appenders[n % 2]
            for i in range(each):
                numbers[(f"a{n % 2}t{n}", i)] = appender.append(
                    event(f"a{n % 2}t{n}-{i}"), [f"a{n % 2}t{n}"], keys, checkpoints)

        run_threads(threads, writer)
    db, total = client[db_name], threads * each
    report = verify(db, keys, [checkpoints])
    assert report.broken is None and report.checked == total and report.checkpoint == total
    docs = stored(db)
    assert len(docs) == total and sorted(numbers.values()) == list(range(1, total + 1))
    assert_in_each_writers_order(numbers, docs)


def test_an_appender_behind_the_end_rechains_its_group_after_it(mongo_uri, client, db_name, keys,
                                                               tmp_path):
    """An appender whose newest known record is no longer the end (another process
    wrote since) hits the taken number, finds the end and writes its whole group
    after it, nothing twice."""
    checkpoints = tmp_path / "checkpoints.log"
    db = client[db_name]
    behind, ahead = Appender(db), None
    assert behind.append(event("first"), ["p"], keys, checkpoints) == 1
    with MongoClient(mongo_uri) as other:
        ahead = Appender(other[db_name])
        for i in range(5):
            assert ahead.append(event(f"ahead-{i}"), ["p"], keys, checkpoints) == i + 2
    numbers: dict[tuple[str, int], int] = {}

    def writer(n: int) -> None:
        for i in range(3):
            numbers[(f"b{n}", i)] = behind.append(event(f"b{n}-{i}"), [f"b{n}"], keys, checkpoints)

    run_threads(4, writer)
    assert sorted(numbers.values()) == list(range(7, 19))
    report = verify(db, keys, [checkpoints])
    assert report.broken is None and report.checked == 18
    assert_in_each_writers_order(numbers, stored(db))


def test_a_closed_client_fails_every_append_and_writes_nothing(mongo_uri, db_name, keys, tmp_path):
    checkpoints = tmp_path / "checkpoints.log"
    closed: MongoClient = MongoClient(mongo_uri)
    closed[db_name].command("ping")
    appender = Appender(closed[db_name])
    closed.close()
    failed: list[str] = []

    def writer(n: int) -> None:
        for i in range(5):
            with pytest.raises(AuditUnavailable):
                appender.append(event(f"t{n}-{i}"), ["p"], keys, checkpoints)
            failed.append(f"t{n}-{i}")

    run_threads(6, writer)
    assert len(failed) == 30 and not checkpoints.exists()
    with MongoClient(mongo_uri) as c:
        assert c[db_name][RECORDS].count_documents({}) == 0


def test_a_database_that_does_not_answer_fails_every_request_waiting_on_the_write(db_name, keys,
                                                                                tmp_path):
    """While the leader waits on a database that is down, the others queue behind it;
    its failure (the driver's, after its server selection timeout) reaches each of
    them, and the next group fails alike."""
    checkpoints = tmp_path / "checkpoints.log"
    with MongoClient(f"mongodb://127.0.0.1:{free_port()}/", serverSelectionTimeoutMS=1500,
                     connectTimeoutMS=500) as down:
        appender = Appender(down[db_name])
        errors: list[AuditUnavailable] = []

        def writer(n: int) -> None:
            with pytest.raises(AuditUnavailable) as raised:
                appender.append(event(f"t{n}"), ["p"], keys, checkpoints)
            errors.append(raised.value)

        run_threads(8, writer)
    assert len(errors) == 8 and len({id(e) for e in errors}) == 8  # one exception per request
    assert all("could not be written" in str(e) for e in errors)
    assert appender.groups < 8 and appender.records == 0  # they waited together
    assert not checkpoints.exists()


def test_a_client_closed_while_appending_leaves_every_answered_record_once(mongo_uri, db_name, keys,
                                                                          tmp_path):
    """Appends that returned are stored exactly once and checkpointed; those that
    failed when the client went away answered an error; the chain verifies."""
    checkpoints = tmp_path / "checkpoints.log"
    client: MongoClient = MongoClient(mongo_uri)
    appender = Appender(client[db_name])
    numbers: dict[tuple[str, int], int] = {}
    failures: list[str] = []
    closing = threading.Timer(0.3, client.close)

    def writer(n: int) -> None:
        for i in range(100_000):  # until the client is closed under it
            try:
                numbers[(f"t{n}", i)] = appender.append(event(f"t{n}-{i}"), [f"t{n}"], keys,
                                                        checkpoints)
            except AuditUnavailable:
                failures.append(f"t{n}-{i}")
                return

    closing.start()
    try:
        run_threads(4, writer)
    finally:
        closing.cancel()
        client.close()
    assert numbers and len(failures) == 4
    with MongoClient(mongo_uri) as c:
        db = c[db_name]
        report = verify(db, keys, [checkpoints])
        assert report.broken is None and report.checkpoint >= max(numbers.values())
        docs = stored(db)
    assert_in_each_writers_order(numbers, docs)


def test_a_record_the_database_refuses_fails_its_own_request_only(client, db_name, keys, tmp_path):
    """A record the database refuses (FerretDB: a field name starting with "$")
    shares its group with others: only its own append fails; the others are
    written and the chain verifies, so one caller cannot make everyone else's
    requests fail (503)."""
    db, checkpoints = client[db_name], tmp_path / "checkpoints.log"
    appender = Appender(db)
    numbers: dict[int, int] = {}
    refused: list[int] = []
    threads, bad = 8, 3

    def writer(n: int) -> None:
        for i in range(10):
            try:
                refusable = {"$refused": 1} if n == bad and i == 5 else {}
                numbers[n * 100 + i] = appender.append(
                    event(f"t{n}-{i}") | refusable, [f"t{n}"], keys, checkpoints)
            except AuditUnavailable:
                refused.append(n * 100 + i)

    run_threads(threads, writer)
    if refused:  # FerretDB refuses the name; MongoDB stores it
        assert refused == [bad * 100 + 5]
    total = threads * 10 - len(refused)
    report = verify(db, keys, [checkpoints])
    assert report.broken is None and report.checked == total
    assert sorted(numbers.values()) == list(range(1, total + 1))


def test_text_no_database_stores_is_replaced_not_refused(client, db_name, keys, tmp_path):
    """A NUL or a lone surrogate (from a caller's path or query) is stored as U+FFFD:
    PostgreSQL cannot hold a NUL, and the request must still be audited."""
    db, checkpoints = client[db_name], tmp_path / "checkpoints.log"
    appender = Appender(db)
    appender.append(event("a\x00b\ud800c"), ["p\x00"], keys, checkpoints)
    (record,) = db[RECORDS].find()
    assert event_of(record)["outcomeDesc"] == "a\ufffdb\ufffdc" and record["patients"] == ["p\ufffd"]
    assert verify(db, keys, [checkpoints]).broken is None


def test_worker_processes_of_one_server_share_the_end_and_never_collide(
        mongo_uri, client, db_name, keys, tmp_path):
    """The appenders of one server's workers (here: two clients, each with its own
    lock on the shared file, as two processes have) chain every group after the end
    either wrote last: no insert is refused, and the chain verifies."""
    checkpoints, shared = tmp_path / "checkpoints.log", tmp_path / "audit.tail"
    with MongoClient(mongo_uri) as other:
        appenders = [Appender(client[db_name], shared_tail=shared),
                     Appender(other[db_name], shared_tail=shared)]
        threads, each = 6, 15
        numbers: dict[tuple[str, int], int] = {}

        def writer(n: int) -> None:
            appender = appenders[n % 2]
            for i in range(each):
                numbers[(f"w{n}", i)] = appender.append(event(f"w{n}-{i}"), [f"w{n}"], keys,
                                                        checkpoints)

        run_threads(threads, writer)
    total = threads * each
    assert [a.refused for a in appenders] == [0, 0]
    assert sorted(numbers.values()) == list(range(1, total + 1))
    report = verify(client[db_name], keys, [checkpoints])
    assert report.broken is None and report.checked == total
    assert_in_each_writers_order(numbers, stored(client[db_name]))


def test_without_the_shared_end_alternating_writers_collide(mongo_uri, client, db_name, keys,
                                                            tmp_path):
    """What the shared file saves: two appenders taking turns without it find the
    number they meant to use taken on every turn but the first."""
    checkpoints = tmp_path / "checkpoints.log"
    with MongoClient(mongo_uri) as other:
        appenders = [Appender(client[db_name]), Appender(other[db_name])]
        for i in range(6):
            appenders[i % 2].append(event(f"turn-{i}"), ["p"], keys, checkpoints)
    assert sum(a.refused for a in appenders) >= 4
    assert verify(client[db_name], keys, [checkpoints]).broken is None


def test_a_shared_end_of_another_chain_or_cut_short_is_not_followed(client, db_name, keys,
                                                                    tmp_path):
    """The file is a hint: one left by a database dropped and made again under the
    same name (another record 1), or torn, never makes a writer leave a gap."""
    checkpoints, shared = tmp_path / "checkpoints.log", tmp_path / "audit.tail"
    first = Appender(client[db_name], shared_tail=shared)
    for i in range(5):
        first.append(event(f"old-{i}"), ["p"], keys, checkpoints)
    client.drop_database(db_name)
    assert shared.read_bytes().split()[1] == b"000000000005"
    checkpoints = tmp_path / "checkpoints-after.log"
    fresh = Appender(client[db_name], shared_tail=shared)
    assert fresh.append(event("new-0"), ["p"], keys, checkpoints) == 1
    assert fresh.append(event("new-1"), ["p"], keys, checkpoints) == 2
    shared.write_bytes(shared.read_bytes()[:100] + b"\n" * 300)  # torn, then garbage
    again = Appender(client[db_name], shared_tail=shared)
    assert again.append(event("new-2"), ["p"], keys, checkpoints) == 3
    report = verify(client[db_name], keys, [checkpoints])
    assert report.broken is None and report.checked == 3
    assert shared.read_bytes().split()[1] == b"000000000003" and len(shared.read_bytes()) == 143


def test_a_shared_end_that_cannot_be_opened_leaves_appending_as_it_was(client, db_name, keys,
                                                                       tmp_path):
    checkpoints = tmp_path / "checkpoints.log"
    appender = Appender(client[db_name], shared_tail=tmp_path / "missing-dir" / "audit.tail")
    assert [appender.append(event(f"e{i}"), ["p"], keys, checkpoints) for i in range(3)] \
        == [1, 2, 3]


def test_requests_that_come_while_another_worker_writes_go_in_one_insert(client, db_name, keys,
                                                                         tmp_path):
    """Group commit across the workers of one server: while another process holds the
    chain's end (here: a lock on the shared file through a descriptor of its own, as
    another worker's is), the requests of this one that come meanwhile all wait for
    it and then go in one insert, rather than the first alone and the rest after it.
    Each still gets its own record, in one chain."""
    import fcntl
    import os
    import time

    checkpoints, shared = tmp_path / "checkpoints.log", tmp_path / "audit.tail"
    appender = Appender(client[db_name], shared_tail=shared)
    appender.append(event("first"), ["p"], keys, checkpoints)  # the file exists, the chain too
    groups, records = appender.groups, appender.records
    other = os.open(shared, os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)
    count = 6
    numbers: list[int] = []
    threads = [threading.Thread(target=lambda n=n: numbers.append(
        appender.append(event(f"r{n}"), ["p"], keys, checkpoints))) for n in range(count)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(appender._queue) < count - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # the leader is blocked on the lock by now (nothing can finish)
        assert not numbers
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
        for t in threads:
            t.join(timeout=60)
    assert sorted(numbers) == list(range(2, count + 2))
    assert (appender.groups - groups, appender.records - records) == (1, count)
    report = verify(client[db_name], keys, [checkpoints])
    assert report.broken is None and report.checked == count + 1


def test_a_leader_interrupted_while_it_waits_for_the_shared_end_leaves_nobody_waiting(
        client, db_name, keys, tmp_path, monkeypatch):
    """A leader stopped before it took its group (an interrupt while it waits for the
    other workers' lock) fails the requests that were waiting with it, and the next
    request leads and is written: the process's audit log is not left stuck."""
    import fcntl

    from fhirserver.audit import shared_tail

    checkpoints, shared = tmp_path / "checkpoints.log", tmp_path / "audit.tail"
    appender = Appender(client[db_name], shared_tail=shared)
    assert appender.append(event("first"), ["p"], keys, checkpoints) == 1
    real, armed = fcntl.flock, [True]

    def flock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and armed:
            armed.clear()
            raise KeyboardInterrupt("while waiting for the shared end")
        real(fd, operation)

    monkeypatch.setattr(shared_tail.fcntl, "flock", flock)
    raised: list[str] = []

    def interrupted() -> None:
        try:
            appender.append(event("interrupted"), ["p"], keys, checkpoints)
        except BaseException as exc:  # noqa: BLE001 - what the request saw
            raised.append(type(exc).__name__)

    first = threading.Thread(target=interrupted)
    first.start()
    first.join(30)
    assert raised == ["KeyboardInterrupt"]
    numbers: list[int] = []
    after = threading.Thread(target=lambda: numbers.append(
        appender.append(event("next"), ["p"], keys, checkpoints)), daemon=True)
    after.start()
    after.join(30)
    assert numbers == [2], "the next request was never written"
    report = verify(client[db_name], keys, [checkpoints])
    assert report.broken is None and report.checked == 2
