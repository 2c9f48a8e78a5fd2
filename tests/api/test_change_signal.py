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
from fhirserver.storage.change_signal import ChangeSignal
from tests import factories as f

from .test_access import clinician, emergency_role, scan_card
from .test_audit import _purpose, break_glass, events


@pytest.fixture
def settings(settings):  # noqa: F811 - the suite's, on a database declared embedded
    return settings.with_(embedded=True)


@pytest.fixture(autouse=True)
def _unshared(app):
    yield
    reach_cache.share(app.extensions["fhirserver"].repo.db, None)


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

    unreadable = ChangeSignal(tmp_path / "no-such-directory" / "care.signal")
    reach_cache.share(app.extensions["fhirserver"].repo.db, unreadable)
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
    signal = reach_cache._signals[reach_cache._db_key(app.extensions["fhirserver"].repo.db)]
    _held(app).signal = signal.read()  # as if nobody had signalled
    assert late not in dr.ids("Observation")

    _as_before(app, before)
    assert late in dr.ids("Observation")


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
