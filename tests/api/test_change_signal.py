"""On the embedded database the workers of one server tell each other at once of a
changed care relationship (storage/change_signal.py, auth/reach_cache.py).

Another worker is played by this process holding what it held before the change:
the relationships, the change log's position and the signal's value it last read."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pymongo import monitoring
from pymongo.monitoring import CommandListener

from fhirserver.auth import reach_cache
from fhirserver.storage import changes
from fhirserver.storage.change_signal import ChangeSignal
from tests import factories as f

from .test_access import clinician, emergency_role, scan_card
from .test_audit import _purpose, break_glass, events


@pytest.fixture
def settings(settings):  # the suite's, on a database declared embedded
    return settings.with_(embedded=True)


@pytest.fixture(autouse=True)
def _unsignalled(app):
    yield
    changes.signal_in(app.extensions["fhirserver"].repo.db, None)


class EmergencyLookups(CommandListener):
    """Counts the audit's queries for a clinician's emergency relationships."""

    def __init__(self) -> None:
        self.seen = 0

    def started(self, event: Any) -> None:
        if event.command_name == "find" and event.command.get("find") == reach_cache.CARE \
                and "emergency" in (event.command.get("filter") or {}):
            self.seen += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


LOOKUPS = EmergencyLookups()
monitoring.register(LOOKUPS)


def _held(app) -> reach_cache._Held:
    return reach_cache._held[reach_cache._db_key(app.extensions["fhirserver"].repo.db)]


def _as_before(app, before: tuple[Any, bytes | None, dict[str, Any]]) -> None:
    """This process now holds what another worker holds that did not make the change."""
    held = _held(app)
    held.counted, held.signal, held.callers = before[0], before[1], dict(before[2])


def _snapshot(app) -> tuple[Any, bytes | None, dict[str, Any]]:
    held = _held(app)
    return held.counted, held.signal, dict(held.callers)


def test_a_write_after_another_workers_break_the_glass_is_emergency_without_a_query(
        fhir, app, monkeypatch, tmp_path):
    """DESIGN.md section 1: emergency access is flagged. A break-the-glass in one
    worker over a treating relationship, then a create and an update in another
    whose cache said "treating": both are recorded as emergency access, and the
    audit asked the database nothing for it (the signal made the other worker look
    at the change log first), nor for a write with no emergency. Where the signal
    cannot be read, a write looks the emergencies up, as it must on a database that
    other servers write too."""
    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    emergency_role(app, "dr-li")
    pid = fhir.create(f.patient("Treated"))["id"]
    oid = fhir.create(f.observation(pid))["id"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    assert dr.get(f"Patient/{pid}").status_code == 200  # held: treating, no emergency
    before = _snapshot(app)
    assert before[1] is not None
    break_glass(dr, pid, "sepsis")
    assert _purpose(events(app)[-1]) == "ETREAT"  # breaking it is emergency access
    _as_before(app, before)

    LOOKUPS.seen = 0
    assert dr.post("Observation", f.observation(pid)).status_code == 201
    assert _purpose(events(app)[-1]) == "ETREAT"
    body = dr.get(f"Observation/{oid}").get_json()
    body["status"] = "amended"
    assert dr.put(f"Observation/{oid}", body).status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"
    assert LOOKUPS.seen == 0

    calm = fhir.create(f.patient("Calm"))["id"]
    scan_card(fhir, app, calm, dr)  # its own record looks: the relationship is new to it
    LOOKUPS.seen = 0
    assert dr.post("Observation", f.observation(calm)).status_code == 201
    assert _purpose(events(app)[-1]) != "ETREAT" and LOOKUPS.seen == 0

    changes.signal_in(app.extensions["fhirserver"].repo.db, tmp_path / "no-such-directory")
    assert dr.post("Observation", f.observation(calm)).status_code == 201
    assert _purpose(events(app)[-1]) != "ETREAT"
    assert LOOKUPS.seen == 1


def test_a_card_scanned_in_another_worker_is_reached_at_once(fhir, app, monkeypatch):
    """A clinician's search of their patients right after a card scan served by
    another worker finds the new patient's results: without the signal that worker
    would answer from what it held for up to REFRESH seconds (shown first, by putting
    the signal back as it held it)."""
    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    first = fhir.create(f.patient("First"))["id"]
    second = fhir.create(f.patient("Second"))["id"]
    fhir.create(f.observation(first))
    late = fhir.create(f.observation(second))["id"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, first, dr)
    assert late not in dr.ids("Observation")
    before = _snapshot(app)
    scan_card(fhir, app, second, dr)

    _as_before(app, before)
    signal = changes.signal_of(app.extensions["fhirserver"].repo.db, reach_cache.CARE)
    assert signal is not None
    _held(app).signal = signal.read()  # as if nobody had signalled
    assert late not in dr.ids("Observation")

    _as_before(app, before)
    assert late in dr.ids("Observation")


def test_every_note_of_a_change_is_signalled_whoever_writes_it(app, settings):
    """Any process of the data directory that notes a change signals it: a server's
    worker, and a command such as an import, which builds its repository alone."""
    from fhirserver.storage.repository import Repository

    db = app.extensions["fhirserver"].repo.db
    signal = changes.signal_of(db, reach_cache.CARE)
    assert signal is not None
    before = signal.read()
    changes.note(db, reach_cache.CARE, ["Practitioner/x|p"])
    assert signal.read() != before
    changes.signal_in(db, None)
    other = Repository.from_settings(settings, initialise=False)
    try:
        before = signal.read()
        changes.note(other.db, reach_cache.CARE, ["Practitioner/x|q"])
        assert signal.read() != before
    finally:
        other.close()


def test_a_signal_is_seen_by_every_reader_of_its_file(tmp_path):
    """Two processes open the file each for itself; a bump by one is a new value to
    the other, every time, and a file that cannot be opened reads as unknown."""
    path = tmp_path / "care-x.signal"
    writer, reader = ChangeSignal(path), ChangeSignal(path)
    seen = Counter()
    last = reader.read()
    for _ in range(20):
        writer.bump()
        now = reader.read()
        seen[now != last] += 1
        last = now
    assert seen == Counter({True: 20})
    lost = ChangeSignal(tmp_path / "missing" / "x.signal")
    lost.bump()
    assert lost.read() is None


def test_a_signal_file_deleted_or_replaced_is_followed_to_the_new_one(tmp_path):
    """A reader that opened the file before it was deleted (a clean-up) or replaced
    (a restore) reads the file now at the path, which the others write: a change
    signalled there is news to it."""
    path = tmp_path / "care-x.signal"
    reader = ChangeSignal(path)
    held = reader.read()
    path.unlink()
    ChangeSignal(path).bump()  # a worker started since: it opened a new file
    assert reader.read() not in (held, None)
    held = reader.read()
    replacement = tmp_path / "restored"
    replacement.write_bytes(b"12345678")
    replacement.replace(path)
    assert reader.read() == b"12345678"


def test_a_signal_that_could_not_be_written_proves_nothing_to_its_writer(tmp_path):
    """The others never learn of a change whose signal was lost: until this process
    signals again, what it reads is unknown (its writes then ask the database)."""
    directory = tmp_path / "data"
    directory.mkdir()
    signal = ChangeSignal(directory / "care-x.signal")
    assert signal.read() is not None
    (directory / "care-x.signal").unlink()
    directory.rmdir()
    signal.bump()
    assert signal.read() is None
    directory.mkdir()
    assert signal.read() is None  # still: the lost one is not made good by a read
    signal.bump()
    assert signal.read() is not None


def test_a_break_the_glass_that_fails_once_its_emergency_is_stored_is_recorded_as_one(
        fhir, app, monkeypatch):
    """DESIGN.md section 1: the emergency relationship is stored, then the request
    fails (here: a Patient write in flight that never ends, a 409); the relationship
    stays, and the failed request's record is emergency access too."""
    import time

    from fhirserver.storage.unit_of_work import Finished

    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    emergency_role(app, "dr-li")
    pid = fhir.create(f.patient("Treated"))["id"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    assert dr.get(f"Patient/{pid}").status_code == 200
    with monkeypatch.context() as m:
        m.setattr(Finished, "still_in_flight", lambda self, entries: ["busy"])
        m.setattr(time, "sleep", lambda s: None)
        r = dr.post(f"Patient/{pid}/$break-glass", {"resourceType": "Parameters", "parameter": [
            {"name": "reason", "valueString": "sepsis"}]})
    assert r.status_code == 409, r.get_json()
    db = app.extensions["fhirserver"].repo.db
    assert db[reach_cache.CARE].find_one({"_id": f"Practitioner/dr-li|{pid}"})["emergency"]
    assert _purpose(events(app)[-1]) == "ETREAT"
