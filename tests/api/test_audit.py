"""The audit log (R4 auditevent.html; DESIGN.md section 1: every access is recorded
and visible to the patient): AuditEvents per request, the keyed chain, the queries
kept without identities, and the patient's view of who looked at their record."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
from click.testing import CliRunner

from fhirserver.api.auditing import EXTENSION
from fhirserver.audit.chain import HEAD, RECORDS, event_of, record_id, verify
from fhirserver.audit.queries import PURPOSE
from fhirserver.cli import main
from fhirserver.crypto.master import load
from tests import factories as f
from tests.conftest import Http, http_as, mint
from tests.mpi.numbers import gb11643

from .test_access import As, clinician, emergency_role, scan_card


def events(app) -> list[dict]:
    db = app.extensions["fhirserver"].repo.db
    return [event_of(d) for d in db[RECORDS].find({}).sort("_id", 1)]


def test_a_clinicians_read_is_recorded_with_who_what_and_why(fhir, app):
    pid = fhir.create(f.patient())["id"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    assert dr.get(f"Patient/{pid}").status_code == 200
    event = events(app)[-1]
    assert event["resourceType"] == "AuditEvent"
    assert event["type"]["code"] == "110110" and event["subtype"][0]["code"] == "read"
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
    assert {"reference": "Practitioner/dr-li"} in [a["who"] for a in event["agent"]]
    assert {"reference": "Organization/hospital-1"} in [a["who"] for a in event["agent"]]
    assert [e["what"]["reference"] for e in event["entity"]] == [f"Patient/{pid}"]
    scans = [e for e in events(app) if e["subtype"][0]["code"] == "scan-card"]
    assert scans and scans[-1]["entity"][0]["what"]["reference"] == f"Patient/{pid}"


def test_searches_record_the_query_and_the_patients_returned(fhir, app):
    a, b = (fhir.create(f.patient(n))["id"] for n in ("Aa", "Bb"))
    fhir.create(f.observation(a))
    fhir.create(f.observation(b))
    r = fhir.get("Observation?code=15074-8&_count=10")
    assert r.status_code == 200
    event = events(app)[-1]
    assert event["type"]["code"] == "110112" and event["subtype"][0]["code"] == "search-type"
    refs = {e["what"]["reference"] for e in event["entity"] if "what" in e}
    assert refs == {f"Patient/{a}", f"Patient/{b}"}
    query = [e["query"] for e in event["entity"] if "query" in e][0]
    assert base64.b64decode(query).decode() == "/Observation?code=15074-8&_count=10"


def test_failures_and_emergencies_are_recorded(fhir, app):
    emergency_role(app, "dr-li")
    pid = fhir.create(f.patient())["id"]
    dr = clinician(app, fhir)
    assert dr.get(f"Patient/{pid}").status_code == 404
    assert events(app)[-1]["outcome"] == "4"
    break_glass(dr, pid, "cardiac arrest")
    assert dr.get(f"Patient/{pid}").status_code == 200
    assert events(app)[-1]["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert fhir.get("Patient", headers={"Authorization": ""}).status_code == 401
    assert events(app)[-1]["agent"][0]["who"]["display"] == "unauthenticated caller"


def break_glass(who: As, pid: str, reason: str) -> None:
    """``Patient/{pid}/$break-glass`` with ``reason``, which must be granted."""
    r = who.post(f"Patient/{pid}/$break-glass", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": reason}]})
    assert r.status_code == 200, r.get_json()


def _purpose(event: dict) -> str | None:
    codings = [c for p in event.get("purposeOfEvent", []) for c in p.get("coding", [])]
    return codings[0]["code"] if codings else None


def test_breaking_the_glass_over_a_treating_relationship_is_recorded_as_emergency(fhir, app):
    """A clinician who already treats the patient and then breaks the glass: the
    break-the-glass request and the reads after it are recorded as emergency access
    (DESIGN.md section 1), though the read's authorization saw the patient in reach
    before the glass was broken."""
    emergency_role(app, "dr-li")
    pid = fhir.create(f.patient("Treated"))["id"]
    fhir.create(f.observation(pid))
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    assert dr.get(f"Patient/{pid}").status_code == 200
    assert _purpose(events(app)[-1]) != "ETREAT"
    break_glass(dr, pid, "anaphylaxis")
    assert _purpose(events(app)[-1]) == "ETREAT"
    assert dr.get(f"Patient/{pid}").status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"
    assert dr.get(f"Observation?patient={pid}").status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"


def test_a_write_after_breaking_the_glass_is_recorded_as_emergency(fhir, app):
    """A create, an update and a delete by a clinician who broke the glass over a
    treating relationship are recorded as emergency access (DESIGN.md section 1) from
    what their authorization saw, and a write with no emergency running is not."""
    emergency_role(app, "dr-li")
    pid = fhir.create(f.patient("Treated"))["id"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    r = dr.post("Observation", f.observation(pid))
    assert r.status_code == 201, r.get_json()
    assert _purpose(events(app)[-1]) != "ETREAT"
    break_glass(dr, pid, "sepsis")
    r = dr.post("Observation", f.observation(pid))
    assert r.status_code == 201, r.get_json()
    assert _purpose(events(app)[-1]) == "ETREAT"
    body = r.get_json()
    body["status"] = "amended"
    assert dr.put(f"Observation/{body['id']}", body).status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"
    assert dr.delete(f"Observation/{body['id']}").status_code in (200, 204)
    assert _purpose(events(app)[-1]) == "ETREAT"


def test_a_write_while_the_reach_cached_predates_another_workers_break_the_glass_is_emergency(
        fhir, app, monkeypatch):
    """Whom a clinician reaches is cached per process and brought up to date every
    few seconds (auth/reach_cache.py REFRESH); a break-the-glass in another worker over
    a treating relationship leaves this worker's cache saying "treating" until then.
    A write then must still be recorded as emergency access (DESIGN.md section 1):
    writes look the emergencies up."""
    from fhirserver.auth import reach_cache

    monkeypatch.setattr(reach_cache, "REFRESH", 60.0)
    emergency_role(app, "dr-li")
    pid = fhir.create(f.patient("Treated"))["id"]
    oid = fhir.create(f.observation(pid))["id"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    assert dr.get(f"Patient/{pid}").status_code == 200  # cached: treating, no emergency
    held = reach_cache._held[reach_cache._db_key(app.extensions["fhirserver"].repo.db)]
    before = dict(held.callers)
    break_glass(dr, pid, "sepsis")
    held.callers.update(before)  # as another process holds them until its next look
    assert dr.post("Observation", f.observation(pid)).status_code == 201
    assert _purpose(events(app)[-1]) == "ETREAT"
    body = dr.get(f"Observation/{oid}").get_json()
    body["status"] = "amended"
    assert dr.put(f"Observation/{oid}", body).status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"


def test_an_emergency_relationship_another_worker_opened_is_recorded_as_such(fhir, app):
    """Whom a clinician reaches is cached for a moment per process; a relationship
    another worker opened meanwhile is looked up before a read is refused, and when
    it is break-the-glass, the read is recorded as emergency access."""
    from datetime import timedelta

    from fhirserver.auth.access import CARE

    emergency_role(app, "dr-li")
    treated, other = (fhir.create(f.patient(n))["id"] for n in ("Known", "Elsewhere"))
    dr = clinician(app, fhir)
    scan_card(fhir, app, treated, dr)
    assert dr.get(f"Patient/{treated}").status_code == 200  # the reach is now cached
    st = app.extensions["fhirserver"]
    now = st.clock()
    st.repo.db[CARE].insert_one({  # as another worker's break-the-glass writes it
        "_id": f"Practitioner/dr-li|{other}", "who": "Practitioner/dr-li", "patient": other,
        "until": now + timedelta(minutes=30), "reason": "break-glass", "emergency": True,
        "at": now})
    assert dr.get(f"Patient/{other}").status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"
    assert dr.get(f"Patient/{treated}").status_code == 200
    assert _purpose(events(app)[-1]) != "ETREAT"


def test_a_conditional_create_that_finds_its_match_names_that_patient(fhir, app):
    """The patients of a record are those the interactions touched, not a re-reading
    of the answer: a conditional create (http.html#ccreate) that answers 200 with an
    existing Observation names that Observation's patient."""
    pid = fhir.create(f.patient("Matched"))["id"]
    ident = [{"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "O-1"}]
    existing = fhir.create(f.observation(pid, identifier=ident))
    r = fhir.post("Observation", f.observation(pid, identifier=ident),
                  headers={"If-None-Exist": "identifier=urn:oid:2.16.840.1.113883.2.4.6.3|O-1"})
    assert r.status_code == 200 and r.get_json()["id"] == existing["id"]
    db = app.extensions["fhirserver"].repo.db
    last = db[RECORDS].find({}).sort("_id", -1).limit(1)[0]
    assert event_of(last)["subtype"][0]["code"] == "create" and last["patients"] == [pid]
    assert [e["what"]["reference"] for e in event_of(last)["entity"] if "what" in e] == \
        [f"Patient/{pid}"]


def test_patient_sees_who_looked_at_their_record_and_nobody_elses(fhir, app):
    me, other = (fhir.create(f.patient(n))["id"] for n in ("Me", "Other"))
    dr = clinician(app, fhir)
    scan_card(fhir, app, me, dr)
    dr.get(f"Patient/{me}")
    fhir.get(f"Patient/{other}")
    patient = As(fhir, mint(app, "patient", "patient/*.rs", patient=me))
    r = patient.get("AuditEvent?_count=100")
    assert r.status_code == 200
    seen = r.get_json()["entry"]
    assert seen and all(
        any(e.get("what", {}).get("reference") == f"Patient/{me}" for e in s["resource"].get("entity", []))
        for s in seen)
    readers = {a["who"].get("reference") for s in seen for a in s["resource"]["agent"]}
    assert "Practitioner/dr-li" in readers
    # Clinicians and backend clients do not browse the audit log.
    assert dr.get("AuditEvent").status_code == 403


def check(app):
    setup = app.extensions[EXTENSION]
    return verify(app.extensions["fhirserver"].repo.db, setup.keys, [setup.checkpoints])


def test_the_chain_verifies_and_reports_the_first_broken_link(fhir, app):
    for n in range(4):
        fhir.create(f.patient(f"P{n}"))
    db = app.extensions["fhirserver"].repo.db
    report = check(app)
    assert report.broken is None and report.checked == len(events(app)) >= 4
    assert report.legacy == 0 and report.checkpoint == report.checked
    altered = {**event_of(db[RECORDS].find_one({"_id": record_id(2)})), "outcome": "0", "action": "D"}
    db[RECORDS].update_one({"_id": record_id(2)}, {"$set": {"event": orjson.dumps(altered).decode()}})
    report = check(app)
    assert report.broken is not None and report.broken.seq == 2 and report.checked == 1
    assert "altered" in report.broken.problem
    db[RECORDS].delete_one({"_id": record_id(2)})
    report = check(app)
    assert report.broken is not None and report.broken.seq == 2
    assert "missing" in report.broken.problem


def test_no_unaudited_access_when_the_log_cannot_be_written(fhir, app, tmp_path):
    """No answer leaves without its record, and no change runs without one: when the
    log cannot be written (here its checkpoint file), reads answer 503 without data
    and writes are refused before anything is stored."""
    import dataclasses

    from fhirserver.api.auditing import EXTENSION

    pid = fhir.create(f.patient("Secret"))["id"]
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    setup = app.extensions[EXTENSION]
    app.extensions[EXTENSION] = dataclasses.replace(setup, checkpoints=blocker / "checkpoints.log")
    r = fhir.get(f"Patient/{pid}")
    assert r.status_code == 503
    assert "Secret" not in r.get_data(as_text=True)
    db = app.extensions["fhirserver"].repo.db
    before = db["Observation"].count_documents({})
    assert fhir.post("Observation", f.observation(pid)).status_code == 503
    assert db["Observation"].count_documents({}) == before


def test_a_change_is_recorded_before_it_runs(fhir, app):
    """A create leaves a record that it started, then one of its outcome: a crash or a
    failing log between the change and its answer cannot hide the change."""
    db = app.extensions["fhirserver"].repo.db
    pid = fhir.create(f.patient("Watched"))["id"]
    events = [event_of(d) for d in db[RECORDS].find({}).sort("_id", 1)]
    started, done = events[-2], events[-1]
    assert started["subtype"][0]["code"] == done["subtype"][0]["code"] == "create"
    assert "outcome" not in started and started["outcomeDesc"].startswith("started")
    assert done["outcome"] == "0" and f"Patient/{pid}" in str(done["entity"])


RESIDENT = "https://fhirserver.example/sid/resident-id"
NUMBER = gb11643(seq="002")  # 11010519491231002X: its check character is X
PHONE = "13800138000"


def newest_search(db) -> dict:
    """The newest stored record of a search (the log is queried by patients and _id
    only: its events are stored as text)."""
    return next(d for d in db[RECORDS].find({}).sort("_id", -1)
                if event_of(d)["subtype"][0]["code"] == "search-type")


def searched_by_resident_id_and_phone(live, typed: str = NUMBER) -> tuple[str, dict, Http]:
    """A patient with a resident ID and a phone, found by an operator's search; the
    stored event of that search."""
    operator = http_as(live)
    me = operator.post("Patient", f.patient("Wang", identifier=[{"system": RESIDENT, "value": NUMBER}],
                                            telecom=[{"system": "phone", "value": PHONE}],
                                            birthDate="1949-12-31", gender="female"))
    assert me.status_code == 201, me.text
    pid = me.json()["id"]
    r = operator.get("Patient", params={"identifier": f"{RESIDENT}|{typed}", "phone": PHONE,
                                        "_count": "5"})
    assert r.status_code == 200 and [e["resource"]["id"] for e in r.json()["entry"]] == [pid]
    db = live[1].extensions["fhirserver"].repo.db
    stored = newest_search(db)
    return pid, stored, operator


def test_a_search_by_resident_id_is_kept_without_the_number(live):
    """AuditEvent.entity.query keeps the search's shape; identity values are replaced by
    an HMAC of the normalised value (the registry's normalisation: spaces out, X upper
    case), so the key holder can still find who searched a given number."""
    pid, stored, operator = searched_by_resident_id_and_phone(live)
    assert stored["patients"] == [pid]
    # The same number typed with a space and a lower-case x hashes alike.
    typed = NUMBER[:6] + " " + NUMBER[6:].lower()
    assert operator.get("Patient", params={"identifier": f"{RESIDENT}|{typed}"}).status_code == 200
    db = live[1].extensions["fhirserver"].repo.db
    again = newest_search(db)
    key = load(live[1].extensions["fhirserver"].settings).derive(PURPOSE)
    expected = "hmac-sha256:" + hmac.new(key, NUMBER.encode(), hashlib.sha256).hexdigest()
    for record in (stored, again):
        raw = repr(record)
        assert NUMBER not in raw and NUMBER[6:].lower() not in raw and PHONE not in raw
        query = base64.b64decode(next(e["query"] for e in event_of(record)["entity"]
                                      if "query" in e)).decode()
        assert query.startswith(f"/Patient?identifier={RESIDENT}|{expected}")
    assert query == f"/Patient?identifier={RESIDENT}|{expected}"
    first = base64.b64decode(next(e["query"] for e in event_of(stored)["entity"]
                                  if "query" in e)).decode()
    assert first.endswith("&_count=5") and "&phone=hmac-sha256:" in first
    # The operator's question "was this number searched?", with the server's settings.
    s = live[1].extensions["fhirserver"].settings
    asked = CliRunner().invoke(main, ["audit", "pseudonym", typed], env={
        "FHIR_DATA_DIR": str(s.data_dir), "FHIR_MASTER_KEY": None, "FHIR_MASTER_KEY_FILE": None})
    assert asked.exit_code == 0 and asked.output.strip() == expected


def test_the_patient_sees_that_someone_searched_by_their_resident_id(live):
    """The patient's own view (GET AuditEvent) holds no query element, but the query
    entity's description names the search's shape and the identifier system as the
    registry (GET NamingSystem) describes it."""
    pid, _, operator = searched_by_resident_id_and_phone(live)
    published = operator.get("NamingSystem", params={"value": RESIDENT}).json()["entry"]
    described = [e["resource"]["description"] for e in published if e["search"]["mode"] == "match"]
    patient = http_as(live, "patient", "patient/*.rs", patient=pid)
    r = patient.get("AuditEvent", params={"_count": "100"})
    assert r.status_code == 200
    body = r.text
    assert NUMBER not in body and PHONE not in body and "query" not in body and "hmac" not in body
    searches = [e for s in r.json()["entry"] for e in s["resource"].get("entity", [])
                if e.get("role", {}).get("code") == "24"]
    assert searches and searches[-1]["description"] == (
        f"Search for Patient by identifier ({described[0]}), phone number")


def test_a_head_left_far_behind_costs_reads_not_the_log(fhir, app):
    """A writer that stalled between its record and the head hint (a network hiccup,
    a failover) may leave the head hundreds of records behind: appending finds the
    real end by primary-key probes, and the chain stays whole."""
    db = app.extensions["fhirserver"].repo.db
    pid = fhir.create(f.patient("Busy"))["id"]
    for _ in range(40):
        assert fhir.get(f"Patient/{pid}").status_code == 200
    db[HEAD].replace_one({"_id": "head"}, {"_id": "head", "seq": 1, "link": "stale"})
    assert fhir.get(f"Patient/{pid}").status_code == 200
    setup = app.extensions[EXTENSION]
    report = verify(db, setup.keys, [setup.checkpoints])
    assert report.broken is None and report.checked > 40
    db[HEAD].delete_one({"_id": "head"})  # lost altogether
    assert fhir.get(f"Patient/{pid}").status_code == 200
    assert verify(db, setup.keys, [setup.checkpoints]).broken is None


def test_an_emergency_among_more_than_twenty_patients_is_recorded_as_such(fhir, app):
    """DESIGN.md section 1 (emergency access is flagged; auditevent.html
    purposeOfEvent): a search whose page holds more than twenty patients, the one
    reached by break-the-glass last among them, is recorded as emergency access."""
    from datetime import timedelta

    from fhirserver.auth.access import record_care

    emergency_role(app, "dr-li")
    st = app.extensions["fhirserver"]
    now = st.clock()
    treated = [fhir.create(f.patient(f"Many{n:02d}"))["id"] for n in range(24)]
    for pid in treated:
        record_care(st.repo.db, "Practitioner/dr-li", pid, now + timedelta(hours=24),
                    "card-scan", now=now)
    broken = fhir.create(f.patient("Many99"))["id"]
    dr = clinician(app, fhir)
    break_glass(dr, broken, "unconscious")
    r = dr.get("Patient?family=Many&_sort=family&_count=50")
    assert r.status_code == 200
    ids = [e["resource"]["id"] for e in r.get_json()["entry"]]
    assert ids[-1] == broken and len(ids) == 25
    assert _purpose(events(app)[-1]) == "ETREAT"
    r = fhir.post("Patient/_search", "family=Many&_sort=family&_count=50", headers=dr.h,
                  content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"


def test_a_search_of_one_patients_record_that_finds_nothing_names_the_patient(fhir, app):
    """DESIGN.md section 1 (every access is audited and visible to the patient),
    auditevent.html (entity): a search pinned to one patient looked into that record
    even when it found nothing, so its audit record names the patient, whether the
    clinician treats them or not (an attempt is what a patient most wants to see)."""
    treated, stranger = (fhir.create(f.patient(n))["id"] for n in ("Seen", "Unseen"))
    dr = clinician(app, fhir)
    scan_card(fhir, app, treated, dr)
    for pid in (treated, stranger):
        for url in (f"Observation?patient={pid}&code=none-such",
                    f"Observation?patient={pid}&code=none-such&_summary=count",
                    f"Patient/{pid}/Observation?code=none-such"):
            r = dr.get(url)
            assert r.status_code in (200, 403, 404), r.get_json()
            if r.status_code == 200:
                assert not r.get_json().get("entry") and r.get_json()["total"] == 0, url
            event = events(app)[-1]
            refs = {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}
            assert refs == {f"Patient/{pid}"}, (url, r.status_code, event)


def test_a_search_naming_a_patient_in_a_list_or_an_untyped_subject_names_them(fhir, app):
    """DESIGN.md section 1 (the patient can see who looked), search.html#reference
    (``patient=a,b`` is an OR; an untyped ``subject=a`` means any of its types):
    writing the same search as a comma list, with a made-up second id, or as an
    untyped ``subject`` looks into the same records, so it names the same patients;
    so do a Patient search by ``_id`` and an ``Observation/$lastn`` that find nothing.
    A patient of the list whose record held nothing is named beside those found."""
    treated, stranger = (fhir.create(f.patient(n))["id"] for n in ("Seen", "Unseen"))
    fhir.create(f.observation(treated, code="1-1"))
    dr = clinician(app, fhir)
    scan_card(fhir, app, treated, dr)
    for pid in (treated, stranger):
        for url in (f"Observation?patient={pid},made-up-id&code=none-such",
                    f"Observation?subject={pid}&code=none-such",
                    f"Observation?subject={pid},Group/made-up-id&code=none-such",
                    f"DiagnosticReport?patient=Patient/{pid},made-up-id&_summary=count",
                    f"Patient?_id={pid},made-up-id&birthdate=1800-01-01",
                    f"Observation/$lastn?patient={pid},made-up-id&code=none-such"):
            r = dr.get(url)
            assert r.status_code == 200, r.get_json()
            assert r.get_json()["total"] == 0 and not r.get_json().get("entry")
            event = events(app)[-1]
            refs = {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}
            made_up = {"Patient/made-up-id"} if ",made-up-id" in url else set()
            assert refs == {f"Patient/{pid}", *made_up}, (url, event)
    r = dr.get(f"Observation?patient={treated},{stranger}&code=1-1")
    assert [e["resource"]["subject"]["reference"] for e in r.get_json()["entry"]] == \
        [f"Patient/{treated}"]
    refs = {e["what"]["reference"] for e in events(app)[-1].get("entity", []) if "what" in e}
    assert refs == {f"Patient/{treated}", f"Patient/{stranger}"}


def test_a_search_refused_for_want_of_scope_still_names_the_patients_it_named(fhir, app):
    """DESIGN.md section 1 (every access is audited and visible to the patient),
    SMART App Launch scopes-and-launch-context (a scope grants a type): a clinician
    whose token holds no Observation scope is refused (403) a search of a patient's
    Observations. The search looked into nothing, but it was an attempt on that
    record, so the refusal's audit record names the patient, as an allowed search
    that found nothing does."""
    treated, stranger = (fhir.create(f.patient(n))["id"] for n in ("Seen", "Unseen"))
    scan_card(fhir, app, treated, clinician(app, fhir))
    dr = clinician(app, fhir, scope="user/Patient.rs")
    for pid in (treated, stranger):
        for url in (f"Observation?patient={pid}&code=1-1",
                    f"Observation?subject=Patient/{pid},made-up-id",
                    f"Patient/{pid}/Observation",
                    f"Observation/$lastn?patient={pid}"):
            r = dr.get(url)
            assert r.status_code == 403, (url, r.get_json())
            event = events(app)[-1]
            refs = {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}
            made_up = {"Patient/made-up-id"} if ",made-up-id" in url else set()
            assert refs == {f"Patient/{pid}", *made_up}, (url, event)


def test_a_refused_request_after_break_the_glass_ended_is_not_recorded_as_emergency(fhir, app):
    """DESIGN.md section 1 (emergency access is flagged), auditevent.html
    purposeOfEvent: once a clinician's break-the-glass access has ended, their
    request for that patient is refused, and its audit record does not say that
    emergency access took place (ETREAT), for a read or for a write."""
    from datetime import UTC, datetime, timedelta

    emergency_role(app, "dr-li")
    pid = fhir.create(f.patient("Unconscious"))["id"]
    dr = clinician(app, fhir, lifetime=3 * 3600)
    break_glass(dr, pid, "unconscious")
    assert dr.get(f"Patient/{pid}").status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"
    later = datetime.now(UTC) + timedelta(hours=2)
    app.extensions["fhirserver"].clock = lambda: later  # the emergency access has ended
    assert dr.get(f"Patient/{pid}").status_code == 404
    assert _purpose(events(app)[-1]) != "ETREAT"
    r = dr.post("Observation", f.observation(pid, code="1-1"))
    assert r.status_code in (403, 404), r.get_json()
    assert _purpose(events(app)[-1]) != "ETREAT"


def test_breaking_the_glass_over_a_longer_relationship_keeps_it_when_the_emergency_ends(fhir, app):
    """DESIGN.md section 1: break-the-glass opens emergency access for a short time
    (FHIR_BREAK_GLASS_MINUTES). A clinician who already treats the patient (a card
    scan for a day, or a place on the care team until the team ends it) and breaks
    the glass keeps that treating relationship: once the emergency time is over they
    still reach the patient, and their reads are no longer recorded as emergency
    access (auditevent.html purposeOfEvent). A team member can still be taken off
    the team; an emergency still running then goes on to its own end."""
    from datetime import UTC, datetime, timedelta

    from .test_care_team import member

    emergency_role(app, "dr-li", "dr-team")
    scanned, teamed = (fhir.create(f.patient(n))["id"] for n in ("Scanned", "Teamed"))
    dr = clinician(app, fhir, lifetime=3 * 3600)
    scan_card(fhir, app, scanned, dr)
    on_team = clinician(app, fhir, "dr-team", lifetime=3 * 3600)
    assert fhir.post(f"Patient/{teamed}/$care-team", member("Practitioner/dr-team")).status_code == 200
    for who, pid in ((dr, scanned), (on_team, teamed)):
        break_glass(who, pid, "anaphylaxis")
        assert who.get(f"Patient/{pid}").status_code == 200
        assert _purpose(events(app)[-1]) == "ETREAT"
    later = datetime.now(UTC) + timedelta(hours=2)
    app.extensions["fhirserver"].clock = lambda: later  # the emergency time is over
    for who, pid in ((dr, scanned), (on_team, teamed)):
        assert who.get(f"Patient/{pid}").status_code == 200, pid
        assert _purpose(events(app)[-1]) != "ETREAT"
        assert who.get(f"Observation?patient={pid}").status_code == 200
        assert _purpose(events(app)[-1]) != "ETREAT"
    # Taken off the team while the emergency time still runs: the emergency access
    # goes on to its end, then nothing is left.
    app.extensions["fhirserver"].clock = lambda: datetime.now(UTC)
    r = fhir.post(f"Patient/{teamed}/$care-team", member("Practitioner/dr-team", remove=True))
    assert r.status_code == 200, r.get_json()
    assert on_team.get(f"Patient/{teamed}").status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"
    app.extensions["fhirserver"].clock = lambda: later
    assert on_team.get(f"Patient/{teamed}").status_code == 404
    assert dr.get(f"Patient/{scanned}").status_code == 200


def test_scanning_the_card_during_break_the_glass_keeps_the_emergency_to_its_end(fhir, app):
    """DESIGN.md section 1: emergency access is flagged. A clinician who broke the
    glass and then scans the patient's card (the relative brought it) is still in
    the emergency they declared until its own end: their reads stay recorded as
    emergency access (auditevent.html purposeOfEvent ETREAT) and the patient's
    restriction of sensitive records stays overridden, as when the glass is broken
    over a card scan; after the emergency the card scan's day goes on, as a
    treating relationship."""
    from datetime import UTC, datetime, timedelta

    from .test_access import SENSITIVE

    emergency_role(app, "dr-li")
    pid = fhir.create(f.patient("Unconscious"))["id"]
    hiv = fhir.create({**f.observation(pid, code="hiv-1"), "meta": SENSITIVE})["id"]
    patient = As(fhir, mint(app, "patient", "patient/*.rs patient/Patient.u", patient=pid))
    assert patient.post(f"Patient/{pid}/$consent", {"resourceType": "Parameters", "parameter": [
        {"name": "restrictSensitive", "valueBoolean": True}]}).status_code == 200
    dr = clinician(app, fhir, lifetime=3 * 3600)
    break_glass(dr, pid, "unconscious, HIV status unknown")
    assert dr.ids(f"Observation?patient={pid}") == [hiv]
    scan_card(fhir, app, pid, dr)
    assert dr.ids(f"Observation?patient={pid}") == [hiv]
    assert _purpose(events(app)[-1]) == "ETREAT"
    assert dr.get(f"Patient/{pid}").status_code == 200
    assert _purpose(events(app)[-1]) == "ETREAT"
    later = datetime.now(UTC) + timedelta(hours=2)
    app.extensions["fhirserver"].clock = lambda: later
    assert dr.get(f"Patient/{pid}").status_code == 200
    assert _purpose(events(app)[-1]) != "ETREAT"
    assert dr.ids(f"Observation?patient={pid}") == []


def test_a_change_made_by_break_the_glass_is_recorded_as_emergency_when_it_ends_it(
        fhir, app, monkeypatch):
    """DESIGN.md section 1: every access audited, emergency access flagged
    (auditevent.html purposeOfEvent ETREAT). A change a clinician makes through
    break-the-glass is emergency access even when the change itself ends the
    emergency relationship (deleting the Patient removes every care relationship
    with them) or the emergency time runs out while the change is being stored:
    what counts is what the request's authorization relied on."""
    from datetime import UTC, datetime, timedelta

    emergency_role(app, "dr-li")
    glass = {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "mass casualty triage"}]}
    st = app.extensions["fhirserver"]
    dr = clinician(app, fhir, lifetime=3 * 3600)

    deleted = fhir.create(f.patient("Deleted"))["id"]
    assert dr.post(f"Patient/{deleted}/$break-glass", glass).status_code == 200
    r = dr.delete(f"Patient/{deleted}")
    assert r.status_code in (200, 204), r.get_json()
    assert _purpose(events(app)[-1]) == "ETREAT"

    written = fhir.create(f.patient("Written"))["id"]
    assert dr.post(f"Patient/{written}/$break-glass", glass).status_code == 200
    later = datetime.now(UTC) + timedelta(hours=2)
    commit = type(st.repo).commit

    def commit_then_time_runs_out(repo, *args, **kwargs):
        out = commit(repo, *args, **kwargs)
        st.clock = lambda: later  # the emergency time ends while the write completes
        return out

    monkeypatch.setattr(type(st.repo), "commit", commit_then_time_runs_out)
    r = dr.post("Observation", f.observation(written, code="1-1"))
    assert r.status_code == 201, r.get_json()
    assert _purpose(events(app)[-1]) == "ETREAT"
    monkeypatch.undo()
    r = dr.post("Observation", f.observation(written, code="1-1"))  # after it: refused
    assert r.status_code in (403, 404) and _purpose(events(app)[-1]) != "ETREAT"
