"""How a worker keeps whom each caller treats (DESIGN.md section 1: only clinicians
actually treating the patient read the record) without reading a caller's care
relationships again every few seconds: the change log of ``_care_relationships``
(storage/changes.py) tells it which ones another process changed."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhirserver import errors
from fhirserver.auth import access, reach_cache
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


def now() -> datetime:
    return datetime.now(UTC)


def scan(db: Any, who: str, patient: str, hours: float = 24) -> None:
    access.record_care(db, who, patient, now() + timedelta(hours=hours), "card-scan", now=now())


def reached(db: Any, who: str) -> set[str]:
    return set(access.live_reach(reach_cache.relationships(db, who), now())[0])


def elsewhere(db: Any, change: Any) -> None:
    """``change`` made by another worker: stored and noted, while this process still
    holds what it read before."""
    held = reach_cache._held.get(reach_cache._db_key(db))
    kept = dict(held.callers) if held is not None else None
    change()
    if held is not None and kept is not None:
        held.callers = kept


def test_a_callers_relationships_are_read_once_then_only_the_log(watched, monkeypatch) -> None:
    """Past REFRESH a worker looks for the note after the last it read, by id, and
    nothing more while there is none: never the caller's relationships again."""
    db, finds = watched
    monkeypatch.setattr(reach_cache, "REFRESH", 0.0)
    for p in ("p1", "p2", "p3"):
        scan(db, ORG, p)
    assert reached(db, ORG) == {"p1", "p2", "p3"}
    assert finds.seen["_care_relationships whole"] == 1
    finds.seen.clear()
    for _ in range(3):
        assert reached(db, ORG) == {"p1", "p2", "p3"}
    assert finds.seen == Counter({"_care_relationships_changes": 6})


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
    # the note naming it, the look past it, and the relationship itself by id
    assert finds.seen == Counter({"_care_relationships_changes": 2, "_care_relationships": 1})


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
