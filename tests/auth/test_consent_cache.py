"""How a worker keeps the patients' sharing choices (DESIGN.md section 1) without
reading them all every few seconds: a change log (storage/changes.py) tells it which
ones another process changed."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.monitoring import CommandListener

from fhirserver.auth import consent
from fhirserver.auth.consent import Choice
from fhirserver.storage import changes


class Finds(CommandListener):
    """Every find, as its collection, and "whole" when it read one without naming ids."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def started(self, event: Any) -> None:
        if event.command_name in ("find", "findAndModify"):
            filtered = "_id" in (event.command.get("filter") or event.command.get("query") or {})
            self.seen[str(event.command[event.command_name]) + ("" if filtered else " whole")] += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


@pytest.fixture
def watched(mongo_uri: str, db_name: str) -> Iterator[tuple[Any, Finds]]:
    """The test's database, every find sent to it counted; no choice cached yet."""
    finds = Finds()
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, event_listeners=[finds])
    db = client[db_name]
    consent._cache.pop(consent._cache_key(db), None)
    yield db, finds
    consent._cache.pop(consent._cache_key(db), None)
    client.close()


def saved_elsewhere(db: Any, patient: str, choice: Choice) -> None:
    """A choice saved by another worker: stored and counted, while this process's
    cache still holds what it read before."""
    held = consent._cache.get(consent._cache_key(db))
    kept = dataclasses.replace(held) if held is not None else None
    consent.save(db, patient, choice)
    if kept is not None:
        consent._cache[consent._cache_key(db)] = kept


def test_unchanged_choices_cost_one_read_of_the_counter(watched, monkeypatch) -> None:
    """Past REFRESH a worker reads the number of the newest change, by id, and nothing
    more while it did not move."""
    db, finds = watched
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    consent.save(db, "p1", Choice(opt_out=True))
    assert consent.cached(db, ["p1", "p2"]) == {"p1": Choice(opt_out=True)}
    finds.seen.clear()
    for _ in range(3):
        assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}
    assert finds.seen == Counter({"_consents_changes": 3})


def test_a_choice_another_worker_saves_is_read_alone_at_the_next_look(watched, monkeypatch) -> None:
    db, finds = watched
    monkeypatch.setattr(consent, "REFRESH", 60.0)
    consent.save(db, "p0", Choice(opt_out=True))
    assert consent.cached(db, ["p0", "p1"]) == {"p0": Choice(opt_out=True)}
    saved_elsewhere(db, "p1", Choice(restrict_sensitive=True))
    assert consent.cached(db, ["p1"]) == {}  # within REFRESH: what it read before
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    finds.seen.clear()
    assert consent.cached(db, ["p0", "p1"]) == {"p0": Choice(opt_out=True),
                                                "p1": Choice(restrict_sensitive=True)}
    # the number, the note naming p1, and p1's choice: never the collection whole
    assert finds.seen == Counter({"_consents_changes": 2, "_consents": 1})
    saved_elsewhere(db, "p1", Choice())  # withdrawn: read again as well
    saved_elsewhere(db, "p0", Choice())
    assert consent.cached(db, ["p0", "p1"]) == {"p0": Choice(), "p1": Choice()}


def test_a_worker_that_missed_many_changes_reads_the_choices_whole(watched, monkeypatch) -> None:
    db, finds = watched
    monkeypatch.setattr(changes, "KEEP", 20)  # whole past 2 changes; notes kept: 20
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    assert consent.cached(db, ["p1"]) == {}
    for i in range(3):
        saved_elsewhere(db, f"p{i}", Choice(opt_out=True))
    finds.seen.clear()
    assert consent.cached(db, ["p0", "p1", "p2"]) == {f"p{i}": Choice(opt_out=True) for i in range(3)}
    assert finds.seen == Counter({"_consents_changes": 1, "_consents whole": 1})
    for i in range(25):  # the notes older than KEEP are dropped
        saved_elsewhere(db, "p0", Choice(restrict_sensitive=i % 2 == 0))
    assert db[changes.log_collection(consent.CONSENTS)].count_documents({}) == 20 + 1
    assert consent.cached(db, ["p0"]) == {"p0": Choice(restrict_sensitive=True)}


def test_a_choice_stored_but_never_noted_is_read_once_a_process_starts(
        watched, monkeypatch, settings) -> None:
    """A worker killed between storing a choice and noting it: the worker started in
    its place counts a change it cannot name, so the others read the choices whole."""
    from tests.conftest import make_app

    db, finds = watched
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    assert consent.cached(db, ["p1"]) == {}
    db[consent.CONSENTS].insert_one({"_id": "p1", "opt_out": True})  # stored, not noted
    assert consent.cached(db, ["p1"]) == {}
    restarted = make_app(settings)
    try:
        finds.seen.clear()
        assert consent.cached(db, ["p1"]) == {"p1": Choice(opt_out=True)}
        assert finds.seen["_consents whole"] == 1
    finally:
        restarted.extensions["fhirserver"].repo.close()


def test_a_note_not_yet_written_makes_the_reader_read_the_choices_whole(watched, monkeypatch) -> None:
    """A writer between taking its number and writing its note (storage/changes.py):
    the reader cannot name the change, so it reads everything, and has it."""
    db, _ = watched
    monkeypatch.setattr(consent, "REFRESH", 0.0)
    assert consent.cached(db, ["p1"]) == {}
    db[consent.CONSENTS].insert_one({"_id": "p1", "share_with_family": True})
    changes._advance(db, consent.CONSENTS)  # numbered, note still to come
    assert consent.cached(db, ["p1"]) == {"p1": Choice(share_with_family=True)}
