"""How a worker keeps whom each caller treats (DESIGN.md section 1: only clinicians
actually treating the patient read the record) without reading a caller's care
relationships again every few seconds: the change log of ``_care_relationships``
(storage/changes.py) tells it which ones another process changed."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect
from pymongo.monitoring import CommandListener

from fhirserver import errors
from fhirserver.auth import access, reach, reach_cache
from fhirserver.auth.reach_cache import CARE
from fhirserver.storage import changes
from tests.finds import FindCounts, counted

DR = "Practitioner/dr-li"
ORG = "Organization/clinic"


@pytest.fixture
def watched(mongo_uri: str, db_name: str) -> Iterator[tuple[Any, FindCounts]]:
    """The test's database, every find sent to it counted; nothing held yet."""
    with counted(mongo_uri, db_name) as (db, finds):
        reach_cache._held.pop(reach_cache._db_key(db), None)
        yield db, finds
        reach_cache._held.pop(reach_cache._db_key(db), None)


@contextmanager
def held_elsewhere(lock: Any) -> Iterator[None]:
    """``lock`` held by another thread meanwhile (a slow whole read or refresh)."""
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            busy.set()
            release.wait(5)

    other = threading.Thread(target=hold)
    other.start()
    busy.wait(5)
    try:
        yield
    finally:
        release.set()
        other.join()


def now() -> datetime:
    return datetime.now(UTC)


def scan(db: Any, who: str, patient: str, hours: float = 24) -> None:
    access.record_care(db, who, patient, now() + timedelta(hours=hours), "card-scan", now=now())


def reached(db: Any, who: str) -> set[str]:
    return set(reach.live_reach(reach_cache.relationships(db, who), now())[0])


def elsewhere(db: Any, change: Any) -> None:
    """``change`` made by another worker: stored and noted, while this process still
    holds what it read before."""
    held = reach_cache._held.get(reach_cache._db_key(db))
    kept = dict(held.callers) if held is not None else None
    change()
    if held is not None and kept is not None:
        held.callers = kept


def test_a_callers_relationships_are_read_once_then_only_the_log(watched, monkeypatch) -> None:
    """Past REFRESH a worker finds again the last note it read and looks for the one
    after it and at the newest number, all by id, and nothing more while there is
    none: never the caller's relationships again."""
    db, finds = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    for p in ("p1", "p2", "p3"):
        scan(db, ORG, p)
    assert reached(db, ORG) == {"p1", "p2", "p3"}
    assert finds.seen["_care_relationships whole"] == 1
    finds.seen.clear()
    for _ in range(3):
        assert reached(db, ORG) == {"p1", "p2", "p3"}
    assert finds.seen == Counter({"_care_relationships_changes": 9})


def test_a_relationship_another_worker_opens_is_read_alone_at_the_next_look(
        watched, monkeypatch) -> None:
    db, finds = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    scan(db, ORG, "p1")
    assert reached(db, ORG) == {"p1"}
    elsewhere(db, lambda: scan(db, ORG, "p2"))
    assert reached(db, ORG) == {"p1"}  # within REFRESH: what it read before
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    finds.seen.clear()
    assert reached(db, ORG) == {"p1", "p2"}
    # the last note read, the note naming it, the look past it, and the relationship
    # itself by id
    assert finds.seen == Counter({"_care_relationships_changes": 3, "_care_relationships": 1})


def test_relationships_another_worker_ends_stop_reaching_at_the_next_look(
        watched, monkeypatch) -> None:
    """A Patient deleted in another worker (its relationships removed, auth/access.py
    end_patient) and a place on the team ended there: gone at the next look."""
    db, finds = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    scan(db, ORG, "p1")
    scan(db, ORG, "p2")
    access.set_team_member(db, "p1", DR, now())
    assert reached(db, ORG) == {"p1", "p2"}
    assert reached(db, DR) == {"p1"}
    elsewhere(db, lambda: access.end_patient(db, "p2"))
    elsewhere(db, lambda: access.set_team_member(db, "p1", DR, now(), remove=True))
    assert reached(db, ORG) == {"p1", "p2"} and reached(db, DR) == {"p1"}
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    finds.seen.clear()
    assert reached(db, ORG) == {"p1"}
    assert reached(db, DR) == set()
    assert finds.seen["_care_relationships whole"] == 0


def test_the_writers_own_process_reaches_at_once(watched, monkeypatch) -> None:
    """A card scan in this worker reaches at this worker's next request, before any
    refresh, and without reading the caller's relationships whole again."""
    db, finds = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    scan(db, ORG, "p1")
    assert reached(db, ORG) == {"p1"}
    finds.seen.clear()
    scan(db, ORG, "p2")
    assert reached(db, ORG) == {"p1", "p2"}
    assert finds.seen["_care_relationships whole"] == 0
    access.end_patient(db, "p1")
    assert reached(db, ORG) == {"p2"}


def test_a_relationship_stored_but_never_noted_is_read_once_a_process_starts(
        watched, monkeypatch, settings) -> None:
    """A worker killed between storing a relationship and noting it: the worker
    started in its place notes a change it cannot name, so the others drop what they
    hold and read each caller's relationships whole again."""
    from tests.conftest import make_app

    db, _ = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    scan(db, ORG, "p1")
    assert reached(db, ORG) == {"p1"}
    db[reach_cache.CARE].insert_one({"_id": f"{ORG}|p2", "who": ORG, "patient": "p2",
                                     "until": now() + timedelta(hours=1), "reason": "card-scan",
                                     "emergency": False, "at": now()})  # stored, not noted
    assert reached(db, ORG) == {"p1"}
    held = reach_cache._held[reach_cache._db_key(db)]
    reach_cache._held.pop(reach_cache._db_key(db))  # the new worker's app is another process
    make_app(settings).extensions["fhirserver"].repo.close()
    reach_cache._held[reach_cache._db_key(db)] = held
    assert reached(db, ORG) == {"p1", "p2"}


def test_relationships_written_around_the_log_are_read_within_reload(
        watched, monkeypatch) -> None:
    db, _ = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    assert reached(db, ORG) == set()
    db[reach_cache.CARE].insert_one({"_id": f"{ORG}|p9", "who": ORG, "patient": "p9",
                                     "until": now() + timedelta(hours=1), "reason": "card-scan",
                                     "emergency": False, "at": now()})
    assert reached(db, ORG) == set()
    monkeypatch.setattr(reach_cache, "RELOAD", 0.0)
    assert reached(db, ORG) == {"p9"}


def test_a_relationship_whose_note_failed_is_read_whole_at_the_next_look(
        watched, monkeypatch) -> None:
    """Stored, but its note could not be written (the answer is an error): this
    process drops what it holds at its next look, even when the note naming nothing
    that follows for the other processes fails too."""
    db, finds = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    scan(db, ORG, "p1")
    assert reached(db, ORG) == {"p1"}
    record = changes.record

    def failing(db_: Any, collection: str, key: str | None) -> int:
        raise OSError("the log is not writable")

    monkeypatch.setattr(changes, "record", failing)
    with pytest.raises(OSError):
        scan(db, ORG, "p2")
    monkeypatch.setattr(changes, "record", record)
    finds.seen.clear()
    assert reached(db, ORG) == {"p1", "p2"}
    assert finds.seen["_care_relationships whole"] == 1


def test_readers_and_a_writer_at_once_lose_nothing(watched, monkeypatch) -> None:
    """Threads reading a caller's reach while another thread of the process opens
    relationships one after another: no reader fails, and every one is reached."""
    db, _ = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    assert reached(db, ORG) == set()
    stop = threading.Event()

    def read() -> int:
        looks = 0
        while not stop.is_set():
            reached(db, ORG)
            looks += 1
        return looks

    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read) for _ in range(3)]
        try:
            for i in range(40):
                scan(db, ORG, f"p{i}")
        finally:
            stop.set()
        assert all(r.result() > 0 for r in readers)
    assert reached(db, ORG) == {f"p{i}" for i in range(40)}


def test_a_request_waits_for_a_refresh_only_past_stale_and_then_fails_503(
        watched, monkeypatch) -> None:
    """While one thread refreshes, the others answer from what is held; past STALE
    they wait, and past WAIT they fail rather than answer from older relationships."""
    db, _ = watched
    scan(db, ORG, "p1")
    assert reached(db, ORG) == {"p1"}
    held = reach_cache._held[reach_cache._db_key(db)]
    monkeypatch.setattr(reach_cache, "WAIT", 0.2)
    with reach_cache._lock:  # another thread's refresh
        held.looked -= reach_cache.REFRESH + 0.5
        assert reached(db, ORG) == {"p1"}
        held.looked -= reach_cache.STALE
        with pytest.raises(errors.Unavailable):
            reached(db, ORG)


OTHER = "Organization/other"


def other_process(db: Any, change: Any) -> None:
    """``change`` made by another worker: this process's cache neither sees nor
    applies it (its own changed() finds nothing held), as in a second process."""
    key = reach_cache._db_key(db)
    held = reach_cache._held.pop(key, None)
    try:
        change()
    finally:
        if held is not None:
            reach_cache._held[key] = held


def _fail(*_: Any, **__: Any) -> int:
    raise AutoReconnect("the log is not writable")


def test_restore_a_few_notes_back_then_an_ended_relationship_is_seen(watched, monkeypatch):
    """A database restored from a copy a few notes older (or a replica set's
    rollback): the numbers after the copy's are taken again by new notes, which the
    reader finds by the nonce of the last note it read, not by number."""
    db, _ = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    scan(db, ORG, "p1")
    for q in ("q1", "q2", "q3"):
        scan(db, OTHER, q)
    assert reached(db, ORG) == {"p1"}          # this worker has read every note
    seen = reach_cache._held[reach_cache._db_key(db)].counted.number
    # The database is restored from a backup taken before the three OTHER scans (or a
    # replica-set rollback undoes them): those notes and documents go, same epoch.
    log = db[changes.log_collection(CARE)]
    for n in (seen - 2, seen - 1, seen):
        log.delete_one({"_id": f"{CARE}#{n}"})
    log.update_one({"_id": CARE}, {"$set": {"n": seen - 3}})
    db[CARE].delete_many({"who": OTHER})
    # Another worker then deletes Patient p1: its relationships go, noted as #seen-2.
    other_process(db, lambda: access.end_patient(db, "p1"))
    assert db[CARE].count_documents({"patient": "p1"}) == 0
    assert reached(db, ORG) == set()


def test_a_dropped_log_refilled_past_the_readers_number_is_seen(watched, monkeypatch):
    """A log dropped and begun again, filled past the reader's number while it was
    busy: the note at its number is another one, so it reads everything again."""
    db, _ = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    scan(db, ORG, "p1")
    assert reached(db, ORG) == {"p1"}
    seen = reach_cache._held[reach_cache._db_key(db)].counted.number
    db.drop_collection(changes.log_collection(CARE))
    other_process(db, lambda: access.end_patient(db, "p1"))  # note #1 of a new epoch
    stale = 0
    for i in range(seen + 5):                  # busy elsewhere: a note at every look
        other_process(db, lambda i=i: scan(db, OTHER, f"q{i}"))
        if i >= seen:
            stale += "p1" in reached(db, ORG)
    assert stale == 0


def test_an_end_whose_notes_failed_elsewhere_is_seen_before_reload(watched, monkeypatch):
    """Both the named note and the unnamed one after it failed: the writer's process
    owes the log the unnamed note and writes it at its next look."""
    db, _ = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    scan(db, ORG, "p1")
    assert reached(db, ORG) == {"p1"}
    monkeypatch.setattr(changes, "record", _fail)
    with pytest.raises(AutoReconnect):
        other_process(db, lambda: access.end_patient(db, "p1"))
    monkeypatch.undo()
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    assert db[CARE].count_documents({"patient": "p1"}) == 0
    assert reached(db, ORG) == set()


def test_same_process_end_is_seen_when_note_fails_and_lock_is_busy(watched, monkeypatch):
    """The note failed while another thread held the cache past WAIT: the writer's
    own process still reads everything again at its next look."""
    db, _ = watched
    record = changes.record
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    scan(db, ORG, "p1")
    assert reached(db, ORG) == {"p1"}
    monkeypatch.setattr(reach_cache, "WAIT", 0.1)
    monkeypatch.setattr(changes, "record", _fail)
    with held_elsewhere(reach_cache._lock), pytest.raises(AutoReconnect):
        access.end_patient(db, "p1")  # stored; the note fails; the lock is not had
    monkeypatch.setattr(changes, "record", record)
    assert reached(db, ORG) == set()


def test_a_refresh_whose_by_id_read_fails_loses_no_end(watched, monkeypatch):
    """A refresh that fails half-way answers nothing and leaves its position where it
    was: the next look applies every change again."""
    db, _ = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    scan(db, ORG, "p1")
    scan(db, ORG, "p2")
    assert reached(db, ORG) == {"p1", "p2"}
    other_process(db, lambda: access.end_patient(db, "p1"))
    other_process(db, lambda: access.end_patient(db, "p2"))
    real = reach_cache._apply

    def flaky(db_: Any, held: Any, keys: Any) -> None:
        real(db_, held, sorted(set(keys))[:1])  # the first applied, then the database goes
        raise AutoReconnect("lost")

    monkeypatch.setattr(reach_cache, "_apply", flaky)
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    with pytest.raises(AutoReconnect):
        reached(db, ORG)                       # fails closed, does not answer
    monkeypatch.setattr(reach_cache, "_apply", real)
    assert reached(db, ORG) == set()           # counted was not advanced


class _Hook(CommandListener):
    def __init__(self) -> None:
        self.armed: Any = None

    def started(self, event: Any) -> None:
        pass

    def succeeded(self, event: Any) -> None:
        if self.armed is not None and event.command_name == "find" \
                and event.reply.get("cursor", {}).get("ns", "").endswith("." + CARE):
            hook, self.armed = self.armed, None
            hook()

    def failed(self, event: Any) -> None:
        pass


def test_a_first_load_racing_another_workers_end_loses_nothing(mongo_uri, db_name, monkeypatch):
    """The whole read of a caller has its reply; before it is stored, another worker
    ends one of them and this process's refresh runs. The end must not be lost."""
    hook = _Hook()
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, event_listeners=[hook])
    db = client[db_name]
    key = reach_cache._db_key(db)
    reach_cache._held.pop(key, None)
    try:
        monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
        reached(db, "Organization/warm")       # held exists; ORG not held yet
        scan(db, ORG, "p1")
        refresher: list[threading.Thread] = []

        def meanwhile() -> None:
            db[CARE].delete_one({"_id": f"{ORG}|p1"})       # another worker's end_patient
            changes.record(db, CARE, f"{ORG}|p1")
            reach_cache._held[key].looked = float("-inf")   # this process's next look
            t = threading.Thread(target=reach_cache._current, args=(db,))
            t.start()
            t.join(0.5)                        # blocked by the lock while the load runs
            refresher.append(t)

        hook.armed = meanwhile
        reached(db, ORG)                       # concurrent with the end: either answer
        refresher[0].join(10)
        assert reached(db, ORG) == set()
    finally:
        reach_cache._held.pop(key, None)
        client.close()


def test_the_log_and_the_relationships_are_read_from_the_primary(mongo_uri, db_name) -> None:
    """A deployment reading from secondaries (``readPreference`` in MONGODB_URI) must
    not read a note's change from a copy behind the note: the caches read the logs
    and what they name from the primary."""
    from pymongo import ReadPreference

    with MongoClient(mongo_uri, readPreference="secondaryPreferred") as client:
        db = client[db_name]
        assert db[CARE].read_preference != ReadPreference.PRIMARY
        for name in (CARE, changes.log_collection(CARE)):
            assert changes.primary(db, name).read_preference == ReadPreference.PRIMARY


def test_an_end_noted_while_the_lock_is_busy_is_seen_by_its_own_process_at_once(
        watched, monkeypatch) -> None:
    """The note is written, but another thread held the cache past WAIT: the writer's
    own process reads everything again at its next look, not after REFRESH."""
    db, _ = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    scan(db, ORG, "p1")
    assert reached(db, ORG) == {"p1"}
    monkeypatch.setattr(reach_cache, "WAIT", 0.1)
    with held_elsewhere(reach_cache._lock):
        access.end_patient(db, "p1")
    assert reached(db, ORG) == set()


def test_owed_when_the_database_goes_away_between_the_store_and_its_note(
        watched, monkeypatch) -> None:
    """The change is stored; then the server stops answering: the note fails, and so
    does every server selection (MongoClient.address selects one). The process still
    owes the log its unnamed note."""
    from pymongo.errors import ServerSelectionTimeoutError

    db, _ = watched
    monkeypatch.setattr(changes, "_owed", set())
    gone = [False]
    real_address = MongoClient.address

    def address(self):
        if gone[0]:
            raise ServerSelectionTimeoutError("no server answers")
        return real_address.fget(self)

    def record(*_: Any, **__: Any) -> int:
        gone[0] = True
        raise ServerSelectionTimeoutError("no server answers")

    monkeypatch.setattr(MongoClient, "address", property(address))
    monkeypatch.setattr(changes, "record", record)
    with pytest.raises(ServerSelectionTimeoutError):
        changes.note(db, "c", ["k"])
    assert changes._owed == {(f"{real_address.fget(db.client)}/{db.name}", "c")}
