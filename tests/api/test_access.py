"""Authorization over HTTP: closed by default (RFC 6750 errors), and the promise that
only clinicians actually treating a patient read the record (DESIGN.md section 1),
with no leak of hidden patients through reads, counts, includes, chains or paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests import factories as f
from tests.conftest import mint


class As:
    """Requests carrying one caller's token."""

    def __init__(self, fhir, token: str) -> None:
        self.fhir, self.h = fhir, {"Authorization": f"Bearer {token}"}

    def get(self, url: str):
        return self.fhir.get(url, headers=self.h)

    def post(self, url: str, body):
        return self.fhir.post(url, body, headers=self.h)

    def put(self, url: str, body):
        return self.fhir.put(url, body, headers=self.h)

    def delete(self, url: str):
        return self.fhir.delete(url, headers=self.h)

    def ids(self, url: str) -> list[str]:
        r = self.get(url)
        assert r.status_code == 200, r.get_json()
        return [e["resource"]["id"] for e in r.get_json().get("entry", [])
                if e["search"]["mode"] in ("match", "include")]


def clinician(app, fhir, dr: str = "dr-li", scope: str = "user/*.cruds", lifetime: int = 3600) -> As:
    return As(fhir, mint(app, "user", scope, lifetime=lifetime, subject=dr,
                         fhirUser=f"Practitioner/{dr}", organization="Organization/hospital-1"))


@pytest.fixture
def world(fhir):
    """Two patients with records; an operator set them up."""
    mine = fhir.create(f.patient("Treated", identifier=[
        {"system": "https://fhirserver.example/sid/passport/USA", "value": "X1234567"}]))["id"]
    other = fhir.create(f.patient("Hidden"))["id"]
    obs_mine = fhir.create(f.observation(mine, code="1-1"))["id"]
    obs_other = fhir.create(f.observation(other, code="1-1"))["id"]
    dr_other = fhir.create({"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"},
                            "subject": {"reference": f"Patient/{other}"},
                            "result": [{"reference": f"Observation/{obs_other}"}]})["id"]
    return {"mine": mine, "other": other, "obs_mine": obs_mine, "obs_other": obs_other,
            "dr_other": dr_other}


def scan_card(fhir, app, pid: str, who: As) -> None:
    fhir.post(f"Patient/{pid}/$issue-card", None)
    code = fhir.get(f"Patient/{pid}/$card-qr").get_json()["parameter"][0]["valueString"]
    r = who.post("Patient/$scan-card", {"resourceType": "Parameters",
                                        "parameter": [{"name": "payload", "valueString": code}]})
    assert r.status_code == 200, r.get_json()


def test_no_token_is_401_with_www_authenticate_rfc6750(fhir):
    r = fhir.get("Patient", headers={"Authorization": ""})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith('Bearer realm="fhirserver"')
    assert r.get_json()["resourceType"] == "OperationOutcome"
    bad = fhir.get("Patient", headers={"Authorization": "Bearer not.a.token"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    for public in ("metadata", ".well-known/smart-configuration"):
        assert fhir.get(public, headers={"Authorization": ""}).status_code == 200


def test_expired_and_foreign_tokens_are_401(fhir, app):
    from fhirserver.auth.tokens import TokenService
    from fhirserver.crypto.master import load
    from fhirserver.crypto.sealing import sealer

    st = app.extensions["fhirserver"]
    service = TokenService(st.repo.db, st.settings.issuer, sealer(load(st.settings)))
    old, _ = service.mint(subject="x", scope="system/*.rs", kind="operator", lifetime=60,
                          now=datetime.now(UTC) - timedelta(hours=2))
    assert fhir.get("Patient", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    other = TokenService(st.repo.db, "https://elsewhere.example", service.sealer)
    foreign, _ = other.mint(subject="x", scope="system/*.rs", kind="operator", lifetime=60,
                            now=datetime.now(UTC))
    assert fhir.get("Patient", headers={"Authorization": f"Bearer {foreign}"}).status_code == 401


def test_scope_not_covering_the_interaction_is_403(fhir, app, world):
    reader = As(fhir, mint(app, "patient", "patient/Observation.rs", patient=world["mine"]))
    assert reader.get(f"Observation/{world['obs_mine']}").status_code == 200
    r = reader.post("Observation", f.observation(world["mine"]))
    assert r.status_code == 403 and r.get_json()["issue"][0]["code"] == "forbidden"
    assert reader.get(f"Patient/{world['mine']}").status_code == 403


def test_clinician_without_relationship_sees_nothing(fhir, app, world):
    dr = clinician(app, fhir)
    assert dr.get(f"Patient/{world['mine']}").status_code == 404  # existence not revealed
    assert dr.get(f"Observation/{world['obs_mine']}").status_code == 404
    assert dr.get(f"Observation/{world['obs_mine']}/_history/1").status_code == 404
    r = dr.get("Observation?_total=accurate")
    assert r.get_json()["total"] == 0 and "entry" not in r.get_json()
    assert dr.get(f"Patient/{world['mine']}/$everything").status_code == 404
    assert dr.get("Observation/_history").get_json().get("entry") is None


def test_card_scan_opens_the_record_to_that_clinician_for_a_day(fhir, app, world):
    dr, colleague = clinician(app, fhir, "dr-li", lifetime=3 * 86400), clinician(app, fhir, "dr-wu")
    scan_card(fhir, app, world["mine"], dr)
    assert dr.get(f"Patient/{world['mine']}").status_code == 200
    assert dr.ids("Observation") == [world["obs_mine"]]
    assert dr.get(f"Observation/{world['obs_other']}").status_code == 404
    assert colleague.get(f"Patient/{world['mine']}").status_code == 404  # only who scanned
    # The relationship ends after FHIR_CARE_HOURS (24).
    st = app.extensions["fhirserver"]
    later = datetime.now(UTC) + timedelta(hours=25)
    st.clock = lambda: later
    assert dr.get(f"Patient/{world['mine']}").status_code == 404  # token still valid, relationship over


def test_hidden_patients_do_not_leak_through_counts_includes_chains_or_has(fhir, app, world):
    dr = clinician(app, fhir)
    scan_card(fhir, app, world["mine"], dr)
    assert dr.get("Observation?_summary=count").get_json()["total"] == 1
    assert dr.get("Patient?_total=accurate").get_json()["total"] == 1
    # Chains and _has only go through visible resources.
    assert dr.ids("Observation?subject.name=hidden") == []
    assert dr.ids("Patient?_has:Observation:patient:code=1-1") == [world["mine"]]
    # Includes never bring in a hidden patient's resources.
    assert world["other"] not in dr.ids("Observation?_include=Observation:patient")
    assert dr.ids(f"Observation?_id={world['obs_other']}&_revinclude=DiagnosticReport:result") == []
    assert dr.ids("Patient?_revinclude=DiagnosticReport:subject") == [world["mine"]]
    # Paging links carry no hidden data either: one page of one.
    page = dr.get("Observation?_count=1").get_json()
    assert [link["relation"] for link in page["link"]] == ["self"]


def test_patient_token_sees_own_and_bound_family_only(fhir, app, world):
    me, child = world["mine"], world["other"]
    fhir.post(f"Patient/{me}/$issue-card", None)
    fhir.post(f"Patient/{child}/$issue-card", None)
    patient = As(fhir, mint(app, "patient", "patient/*.rs patient/Patient.u", patient=me))
    assert patient.get(f"Observation/{world['obs_other']}").status_code == 404
    assert patient.ids("Observation") == [world["obs_mine"]]
    # The member shows their live card code: that is their consent.
    child_code = fhir.get(f"Patient/{child}/$card-qr").get_json()["parameter"][0]["valueString"]
    r = patient.post(f"Patient/{me}/$bind-family", {"resourceType": "Parameters", "parameter": [
        {"name": "code", "valueString": child_code}]})
    assert r.status_code == 201, r.get_json()
    assert sorted(patient.ids("Observation")) == sorted([world["obs_mine"], world["obs_other"]])
    # Another patient's family is not theirs to manage.
    assert patient.get(f"Patient/{child}/$family").status_code == 403


def test_clinician_writes_only_for_treated_patients(fhir, app, world):
    dr = clinician(app, fhir)
    r = dr.post("Observation", f.observation(world["mine"]))
    assert r.status_code == 403
    scan_card(fhir, app, world["mine"], dr)
    assert dr.post("Observation", f.observation(world["mine"])).status_code == 201
    # Moving a treated patient's record to a hidden patient is refused.
    body = fhir.get(f"Observation/{world['obs_mine']}").get_json()
    body["subject"] = {"reference": f"Patient/{world['other']}"}
    assert dr.put(f"Observation/{world['obs_mine']}", body).status_code == 403


def test_authoring_gives_reach_to_the_record_written_not_to_the_patient(fhir, app, world):
    """Being named performer gives nothing; the author of a record reads that record
    (and only it) once the care relationship that let them write it has ended."""
    fhir.create(f.observation(world["other"], performer=[{"reference": "Practitioner/dr-zhao"}]))
    performer = clinician(app, fhir, "dr-zhao")
    assert performer.get(f"Patient/{world['other']}").status_code == 404
    assert performer.ids("Observation") == []
    author = clinician(app, fhir, "dr-author", lifetime=3 * 86400)
    scan_card(fhir, app, world["other"], author)
    written = author.post("Observation", f.observation(world["other"], code="9-9")).get_json()["id"]
    later = datetime.now(UTC) + timedelta(hours=25)
    app.extensions["fhirserver"].clock = lambda: later  # the card scan's relationship is over
    assert author.get(f"Patient/{world['other']}").status_code == 404
    assert author.get(f"Observation/{world['obs_other']}").status_code == 404
    assert author.get(f"Observation/{written}").status_code == 200
    assert author.ids("Observation") == [written]


def emergency_role(app, *names: str) -> None:
    """User accounts with the emergency-access role for these clinicians."""
    from fhirserver.auth import users

    for name in names:
        users.add(app.extensions["fhirserver"].repo.db, users.User(
            name, "practitioner", f"Practitioner/{name}", "Organization/hospital-1",
            (users.EMERGENCY_ACCESS,)), "a long enough password")


def test_break_the_glass_needs_a_reason_and_is_recorded(fhir, app, world):
    emergency_role(app, "dr-li")
    dr = clinician(app, fhir)
    assert dr.get(f"Patient/{world['other']}").status_code == 404
    no_reason = dr.post(f"Patient/{world['other']}/$break-glass", {"resourceType": "Parameters"})
    assert no_reason.status_code == 400
    r = dr.post(f"Patient/{world['other']}/$break-glass", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "unconscious in the emergency room"}]})
    assert r.status_code == 200
    assert dr.get(f"Patient/{world['other']}").status_code == 200
    log = list(app.extensions["fhirserver"].repo.db["_emergency_access"].find({"patient": world["other"]}))
    assert [(e["by"], e["reason"]) for e in log] == [("Practitioner/dr-li", "unconscious in the emergency room")]
    patient = As(fhir, mint(app, "patient", "patient/*.rs", patient=world["mine"]))
    assert patient.post(f"Patient/{world['other']}/$break-glass", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "x"}]}).status_code == 403


def test_backend_client_writes_results_and_looks_up_by_identifier(fhir, app, world):
    lab = As(fhir, mint(app, "system", "system/Observation.crus system/Patient.rs", subject="lab-1",
                        client_id="lab-1", organization="Organization/lab"))
    # Writing into a record needs its organisation's care relationship, as reading does.
    assert lab.post("Observation", f.observation(world["mine"])).status_code == 403
    found = lab.ids("Patient?identifier=https://fhirserver.example/sid/passport/USA|X1234567")
    assert found == [world["mine"]]
    assert lab.get(f"Observation/{world['obs_mine']}").status_code == 404
    assert lab.ids("Observation") == []
    assert lab.delete(f"Observation/{world['obs_mine']}").status_code == 403
    scan_card(fhir, app, world["mine"], clinician(app, fhir, "dr-lab").__class__(
        fhir, mint(app, "user", "user/*.cruds", subject="dr-lab", fhirUser="Practitioner/dr-lab",
                   organization="Organization/lab")))
    assert lab.post("Observation", f.observation(world["mine"])).status_code == 201


def test_granular_scope_limits_to_matching_records(fhir, app, world):
    me = world["mine"]
    lab_obs = fhir.create(f.observation(me, category=[{"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}]))["id"]
    scoped = As(fhir, mint(app, "patient", "patient/Observation.rs?category=laboratory", patient=me))
    assert scoped.ids("Observation") == [lab_obs]
    assert scoped.get(f"Observation/{world['obs_mine']}").status_code == 404
    assert scoped.get(f"Observation/{lab_obs}").status_code == 200



def test_a_granular_scope_reads_its_dates_in_the_server_zone_as_a_search_does(fhir, app, world):
    """SMART App Launch scopes-and-launch-context (granular scopes: a search query) and
    search.html#date: a date without a zone is read in the server's zone
    (Asia/Shanghai here). A result of the morning of 2024-03-01 in Shanghai, which is
    the evening of 2024-02-29 in UTC, is within a scope for 2024-03-01, as it is
    within the search; the one of the day before is outside both."""
    me = world["mine"]
    morning = fhir.create(f.observation(me, effectiveDateTime="2024-03-01T07:00:00+08:00"))["id"]
    before = fhir.create(f.observation(me, effectiveDateTime="2024-02-29T12:00:00+08:00"))["id"]
    assert [e["resource"]["id"] for e in fhir.get(
        f"Observation?patient={me}&date=2024-03-01").get_json().get("entry", [])] == [morning]
    scoped = As(fhir, mint(app, "patient", "patient/Observation.rs?date=2024-03-01", patient=me))
    assert scoped.ids("Observation") == [morning]
    assert scoped.get(f"Observation/{morning}").status_code == 200
    assert scoped.get(f"Observation/{before}").status_code == 404


SENSITIVE = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]}


def test_consent_restricts_sensitive_records_to_the_writing_organisation(fhir, app, world):
    me = world["mine"]
    ours = clinician(app, fhir, "dr-li")  # Organization/hospital-1
    theirs = As(fhir, mint(app, "user", "user/*.cruds", subject="dr-ma", fhirUser="Practitioner/dr-ma",
                           organization="Organization/hospital-2"))
    scan_card(fhir, app, me, ours)
    scan_card(fhir, app, me, theirs)
    hiv = ours.post("Observation", {**f.observation(me, code="hiv-1"), "meta": SENSITIVE}).get_json()["id"]
    patient = As(fhir, mint(app, "patient", "patient/*.rs patient/Patient.u", patient=me))
    assert sorted(theirs.ids("Observation")) == sorted([world["obs_mine"], hiv])

    r = patient.post(f"Patient/{me}/$consent", {"resourceType": "Parameters", "parameter": [
        {"name": "restrictSensitive", "valueBoolean": True}]})
    assert r.status_code == 200
    assert theirs.ids("Observation") == [world["obs_mine"]]
    assert theirs.get(f"Observation/{hiv}").status_code == 404
    assert theirs.get("Observation?_summary=count").get_json()["total"] == 1
    assert sorted(ours.ids("Observation")) == sorted([world["obs_mine"], hiv])  # the writer still sees it
    assert sorted(patient.ids("Observation")) == sorted([world["obs_mine"], hiv])  # and the patient

    patient.post(f"Patient/{me}/$consent", {"resourceType": "Parameters", "parameter": [
        {"name": "optOut", "valueBoolean": True}]})
    assert theirs.ids("Observation") == []
    assert ours.ids("Observation") == [hiv]  # only what hospital-1 wrote

    # Break the glass still opens the record, as an emergency.
    emergency_role(app, "dr-ma")
    theirs.post(f"Patient/{me}/$break-glass", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "anaphylaxis"}]})
    assert sorted(theirs.ids("Observation")) == sorted([world["obs_mine"], hiv])
    # Nobody but the patient (or an operator) sets the choices.
    assert theirs.post(f"Patient/{me}/$consent", {"resourceType": "Parameters"}).status_code == 403


def test_each_patients_choice_applies_to_searches_and_reads_of_their_record_alone(
        fhir, app, world):
    """Searches limited to one patient (``patient=X``, a sort, ``$everything``) and reads
    apply that patient's sharing choice, whatever the choices of the caller's other
    patients (search.html: the server's own restrictions apply to every search)."""
    me, other = world["mine"], fhir.create(f.patient("Other"))["id"]
    ours = clinician(app, fhir, "dr-li")  # Organization/hospital-1
    theirs = As(fhir, mint(app, "user", "user/*.cruds", subject="dr-ma", fhirUser="Practitioner/dr-ma",
                           organization="Organization/hospital-2"))
    for pid in (me, other):
        scan_card(fhir, app, pid, ours)
        scan_card(fhir, app, pid, theirs)
    hiv = {pid: ours.post("Observation", {**f.observation(pid, code="hiv-1"), "meta": SENSITIVE,
                                          "effectiveDateTime": "2024-03-01"}).get_json()["id"]
           for pid in (me, other)}
    patient = As(fhir, mint(app, "patient", "patient/*.rs patient/Patient.u", patient=me))

    def seen(pid: str) -> dict[str, list[str]]:
        everything = theirs.get(f"Patient/{pid}/$everything").get_json()
        return {"search": sorted(theirs.ids(f"Observation?patient={pid}")),
                "sorted": theirs.ids(f"Observation?patient={pid}&_sort=-date"),
                "everything": sorted(e["resource"]["id"] for e in everything["entry"]
                                     if e["resource"]["resourceType"] == "Observation"),
                "read": [hiv[pid]] if theirs.get(f"Observation/{hiv[pid]}").status_code == 200 else []}

    assert seen(me)["search"] == sorted([world["obs_mine"], hiv[me]])
    assert patient.post(f"Patient/{me}/$consent", {"resourceType": "Parameters", "parameter": [
        {"name": "restrictSensitive", "valueBoolean": True}]}).status_code == 200
    assert seen(me) == {"search": [world["obs_mine"]], "sorted": [world["obs_mine"]],
                        "everything": [world["obs_mine"]], "read": []}
    assert seen(other) == {"search": [hiv[other]], "sorted": [hiv[other]],
                           "everything": [hiv[other]], "read": [hiv[other]]}
    patient.post(f"Patient/{me}/$consent", {"resourceType": "Parameters", "parameter": [
        {"name": "optOut", "valueBoolean": True}]})
    assert seen(me) == {"search": [], "sorted": [], "everything": [], "read": []}
    assert seen(other)["search"] == [hiv[other]]
    assert sorted(ours.ids(f"Observation?patient={me}")) == [hiv[me]]  # what hospital-1 wrote


def test_a_relationship_another_worker_just_opened_applies_the_patients_choice(fhir, app):
    """DESIGN.md section 1: a patient's sharing choices apply to every clinician and
    client who treats them. A card scan another worker recorded moments ago (not yet
    in this process's cache) lets a read through before it is refused; the patient's
    choice applies to that read as to every later one, for a clinician as for their
    organisation's backend client; break-the-glass still overrides it."""
    from fhirserver.auth.access import CARE

    known, restricted = (fhir.create(f.patient(n))["id"] for n in ("Known", "Restricted"))
    writer = clinician(app, fhir, "dr-li")  # Organization/hospital-1
    scan_card(fhir, app, restricted, writer)
    plain = writer.post("Observation", f.observation(restricted)).get_json()["id"]
    hiv = writer.post("Observation", {**f.observation(restricted, code="hiv-1"),
                                      "meta": SENSITIVE}).get_json()["id"]
    assert fhir.post(f"Patient/{restricted}/$consent", {"resourceType": "Parameters", "parameter": [
        {"name": "restrictSensitive", "valueBoolean": True}]}).status_code == 200
    dr = As(fhir, mint(app, "user", "user/*.cruds", subject="dr-ma", fhirUser="Practitioner/dr-ma",
                       organization="Organization/hospital-2"))
    lab = As(fhir, mint(app, "system", "system/*.rs", client_id="lab-2",
                        organization="Organization/hospital-2"))
    scan_card(fhir, app, known, dr)
    st = app.extensions["fhirserver"]
    now = st.clock()
    for who, caller in (("Practitioner/dr-ma", dr), ("Organization/hospital-2", lab)):
        assert caller.get(f"Patient/{known}").status_code == 200  # the reach is now cached
        st.repo.db[CARE].insert_one({  # as another worker's card scan writes it
            "_id": f"{who}|{restricted}", "who": who, "patient": restricted,
            "until": now + timedelta(hours=24), "reason": "card-scan", "emergency": False,
            "at": now})
        assert caller.get(f"Observation/{plain}").status_code == 200
        assert caller.get(f"Observation/{hiv}").status_code == 404
        assert caller.get(f"Observation/{hiv}/_history/1").status_code == 404
    emergency_role(app, "dr-em")
    em = As(fhir, mint(app, "user", "user/*.cruds", subject="dr-em", fhirUser="Practitioner/dr-em",
                       organization="Organization/hospital-2"))
    assert em.get(f"Patient/{known}").status_code == 404  # nobody in reach, cached
    st.repo.db[CARE].insert_one({  # as another worker's break-the-glass writes it
        "_id": f"Practitioner/dr-em|{restricted}", "who": "Practitioner/dr-em",
        "patient": restricted, "until": now + timedelta(minutes=30), "reason": "break-glass",
        "emergency": True, "at": now})
    assert em.get(f"Observation/{hiv}").status_code == 200


def test_care_team_membership_is_a_care_relationship(fhir, app, world):
    dr = clinician(app, fhir, "dr-team")
    assert dr.get(f"Patient/{world['mine']}").status_code == 404
    r = fhir.post(f"Patient/{world['mine']}/$care-team", {"resourceType": "Parameters", "parameter": [
        {"name": "member", "valueReference": {"reference": "Practitioner/dr-team"}}]})
    assert r.status_code == 200
    assert r.get_json()["participant"] == [{"member": {"reference": "Practitioner/dr-team"}}]
    assert dr.get(f"Patient/{world['mine']}").status_code == 200
    assert dr.ids("Observation") == [world["obs_mine"]]
    fhir.post(f"Patient/{world['mine']}/$care-team", {"resourceType": "Parameters", "parameter": [
        {"name": "member", "valueReference": {"reference": "Practitioner/dr-team"}},
        {"name": "remove", "valueBoolean": True}]})
    assert dr.get(f"Patient/{world['mine']}").status_code == 404
    # Clinicians do not put themselves on a team.
    assert dr.post(f"Patient/{world['mine']}/$care-team", {"resourceType": "Parameters", "parameter": [
        {"name": "member", "valueReference": {"reference": "Practitioner/dr-team"}}]}).status_code == 403


def test_conditional_interactions_see_only_what_the_caller_sees(fhir, app, world):
    """http.html#ccreate: If-None-Exist and conditional update match within the
    caller's view, so they cannot fetch or reveal a hidden patient."""
    dr = clinician(app, fhir)
    r = fhir.post("Patient", f.patient("Hidden"), headers={**dr.h, "If-None-Exist": "family=hidden"})
    assert r.status_code == 201 and r.get_json()["id"] != world["other"]
    put = fhir.put("Patient?family=hidden&given=peter", {**f.patient("Hidden")}, headers=dr.h)
    assert world["other"] not in put.get_data(as_text=True)


def test_deleted_hidden_records_stay_hidden(fhir, app, world):
    fhir.delete(f"DiagnosticReport/{world['dr_other']}")
    fhir.delete(f"Observation/{world['obs_other']}")
    dr = clinician(app, fhir)
    assert dr.get(f"Observation/{world['obs_other']}").status_code == 404  # not 410
    assert dr.get(f"Observation/{world['obs_other']}/_history/1").status_code == 404
    assert dr.get(f"Observation/{world['obs_other']}/_history").status_code == 404


def test_backend_identifier_lookup_is_exact_system_and_value_only(fhir, app, world):
    lab = As(fhir, mint(app, "system", "system/Patient.rs", subject="lab-2", client_id="lab-2",
                        organization="Organization/lab"))
    for listing in ("Patient?identifier:missing=false", "Patient?identifier=https://fhirserver.example/sid/passport/USA|",
                    "Patient?identifier:text=x", "Patient?identifier=X1234567",
                    "Patient?identifier=https://fhirserver.example/sid/passport/USA|X1234567&_revinclude=Observation:patient"):
        assert world["mine"] not in lab.ids(listing), listing
    assert lab.ids("Patient?identifier=https://fhirserver.example/sid/passport/USA|X1234567") == [world["mine"]]


def test_history_respects_granular_scopes_and_consent(fhir, app, world):
    me = world["mine"]
    scoped = As(fhir, mint(app, "patient", "patient/Observation.rs?category=laboratory", patient=me))
    assert scoped.get("Observation/_history").status_code == 403
    theirs = As(fhir, mint(app, "user", "user/*.cruds", subject="dr-ma", fhirUser="Practitioner/dr-ma",
                           organization="Organization/hospital-2"))
    scan_card(fhir, app, me, theirs)
    history = lambda: [e["resource"]["id"] for e in theirs.get("Observation/_history").get_json().get("entry", [])
                       if "resource" in e]  # noqa: E731
    assert world["obs_mine"] in history()
    patient = As(fhir, mint(app, "patient", "patient/*.rs patient/Patient.u", patient=me))
    patient.post(f"Patient/{me}/$consent", {"resourceType": "Parameters", "parameter": [
        {"name": "optOut", "valueBoolean": True}]})
    assert world["obs_mine"] not in history()


def test_a_patients_audit_view_shows_no_other_patients_or_queries(fhir, app, world):
    me = world["mine"]
    fhir.get("Observation?code=1-1")  # an event about both patients
    patient = As(fhir, mint(app, "patient", "patient/*.rs", patient=me))
    body = patient.get("AuditEvent?_count=200").get_data(as_text=True)
    assert world["other"] not in body and "query" not in body
    assert f"Patient/{me}" in body


def test_identifier_conflict_names_the_holder_only_to_who_may_see_it(fhir, app, world):
    taken = {"system": "https://fhirserver.example/sid/passport/USA", "value": "X1234567"}
    dr = clinician(app, fhir)  # no registration scope: never learns the number is taken
    r = dr.post("Patient", f.patient("Copy", identifier=[taken]))
    assert r.status_code == 403
    desk = clinician(app, fhir, "dr-desk", scope="user/*.cruds registration")
    r = desk.post("Patient", f.patient("Copy", identifier=[taken]))
    assert r.status_code == 409
    assert world["mine"] not in r.get_data(as_text=True)
    r = fhir.post("Patient", f.patient("Copy", identifier=[taken]))  # the operator sees all
    assert world["mine"] in r.get_data(as_text=True)


def test_lastn_returns_only_the_callers_reach(fhir, app, world):
    """observation-operation-lastn.html: $lastn is a search, so it returns what the
    caller may search for: a patient their own latest, a clinician with no relation
    to either patient nothing, whoever the ``patient`` parameter names."""
    me = As(fhir, mint(app, "patient", "patient/Observation.rs", patient=world["mine"]))
    for query in ("", f"?patient={world['other']}", "?code=1-1&max=5"):
        got = me.get(f"Observation/$lastn{query}").get_json()
        assert [e["resource"]["id"] for e in got.get("entry", [])] == (
            [] if world["other"] in query else [world["obs_mine"]]), query
    dr = clinician(app, fhir)
    for query in ("", f"?patient={world['mine']}", f"?subject=Patient/{world['other']}"):
        assert dr.get(f"Observation/$lastn{query}").get_json().get("entry") is None, query


def test_an_ehr_launch_with_patient_scopes_reads_the_launch_patient_only_whatever_its_user_scopes(
        fhir, app, world):
    """SMART App Launch scopes-and-launch-context (patient-specific scopes): in a
    clinician's EHR launch, ``patient/`` scopes give access to the launch patient's
    data only. An app granted the usual ``patient/*.rs user/Practitioner.rs`` (its
    user scope is for the clinician directory, not for health data) reads, vreads,
    and reads the history of none of the clinician's other patients' records, as it
    finds none of them by searching."""
    dr = clinician(app, fhir)
    scan_card(fhir, app, world["mine"], dr)
    scan_card(fhir, app, world["other"], dr)
    launched = As(fhir, mint(app, "user", "launch openid fhirUser patient/*.rs user/Practitioner.rs",
                             subject="dr-li", fhirUser="Practitioner/dr-li",
                             organization="Organization/hospital-1", patient=world["mine"]))
    assert launched.get(f"Patient/{world['mine']}").status_code == 200
    assert launched.get(f"Observation/{world['obs_mine']}").status_code == 200
    assert launched.ids(f"Observation?patient={world['other']}") == []
    for url in (f"Patient/{world['other']}", f"Observation/{world['obs_other']}",
                f"Observation/{world['obs_other']}/_history/1", f"Observation/{world['obs_other']}/_history",
                f"Patient/{world['other']}/$everything"):
        assert launched.get(url).status_code == 404, url


def test_a_token_without_a_scope_for_a_type_learns_no_ids_of_it(fhir, app, world):
    """R4 security.html (a refusal should not reveal whether the resource exists) and
    SMART App Launch scopes-and-launch-context (a scope grants a type): a token
    with no scope to read Patients or Observations gets the same refusal for a
    hidden record's id as for an id that does not exist, by read, vread, history
    and $everything, rather than a 403 that confirms the id."""
    fhir.delete(f"DiagnosticReport/{world['dr_other']}")
    fhir.delete(f"Observation/{world['obs_other']}")
    no_patients = As(fhir, mint(app, "patient", "patient/Observation.rs", patient=world["mine"]))
    no_results = As(fhir, mint(app, "patient", "patient/Patient.rs", patient=world["mine"]))
    for who, rtype, rid in ((no_patients, "Patient", world["other"]),
                            (no_results, "Observation", world["obs_mine"]),
                            (no_results, "Observation", world["obs_other"])):  # a deleted one
        for suffix in ("", "/_history/1", "/_history") + (("/$everything",) if rtype == "Patient" else ()):
            hidden, missing = who.get(f"{rtype}/{rid}{suffix}"), who.get(f"{rtype}/no-such-id{suffix}")
            assert (hidden.status_code, hidden.get_json()["issue"][0]["code"]) == \
                (missing.status_code, missing.get_json()["issue"][0]["code"]), (rtype, suffix)
            assert hidden.status_code == 403, (rtype, suffix)


def _versions(who: As, url: str) -> list[str]:
    r = who.get(url)
    assert r.status_code == 200, r.get_json()
    return [e["resource"]["meta"]["versionId"] for e in r.get_json().get("entry", [])]


def test_a_version_of_another_patient_stays_hidden_after_the_record_moves_http_vread(
        fhir, app, world):
    """R4 http.html#vread and #history (instance): a result filed to the wrong patient
    and then corrected keeps its first version hidden from the clinician of the patient
    it moved to; that version was the other patient's record (DESIGN.md section 1)."""
    me, other = world["mine"], world["other"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, me, dr)
    filed = fhir.create(f.observation(other, code="hiv-vl"))
    moved = fhir.put(f"Observation/{filed['id']}", {**filed, "subject": {"reference": f"Patient/{me}"}})
    assert moved.status_code == 200, moved.get_json()
    oid = filed["id"]

    assert dr.get(f"Observation/{oid}").status_code == 200
    assert dr.get(f"Observation/{oid}/_history/2").status_code == 200
    assert dr.get(f"Observation/{oid}/_history/1").status_code == 404
    # as a version that never was
    assert dr.get(f"Observation/{oid}/_history/1").get_json()["issue"][0]["diagnostics"] \
        == dr.get(f"Observation/{oid}/_history/9").get_json()["issue"][0]["diagnostics"] \
        .replace("Version 9", "Version 1")
    assert _versions(dr, f"Observation/{oid}/_history") == ["2"]
    assert _versions(fhir, f"Observation/{oid}/_history") == ["2", "1"]  # the operator sees both


def test_a_version_that_was_sensitive_stays_hidden_after_its_label_is_dropped_http_vread(
        fhir, app, world):
    """R4 http.html#vread and #history (instance), security labels (security-labels.html)
    under a patient's consent: a record another organisation wrote with a sensitive
    label is hidden from a clinician once the patient restricts sensitive records; when a
    later version drops the label, the labelled version stays hidden."""
    me = world["mine"]
    theirs = As(fhir, mint(app, "user", "user/*.cruds", subject="dr-ma", fhirUser="Practitioner/dr-ma",
                           organization="Organization/hospital-2"))
    scan_card(fhir, app, me, theirs)
    patient = As(fhir, mint(app, "patient", "patient/*.rs patient/Patient.u", patient=me))
    assert patient.post(f"Patient/{me}/$consent", {"resourceType": "Parameters", "parameter": [
        {"name": "restrictSensitive", "valueBoolean": True}]}).status_code == 200
    labelled = fhir.create({**f.observation(me, code="hiv-1"), "meta": SENSITIVE})
    oid = labelled["id"]
    assert theirs.get(f"Observation/{oid}").status_code == 404
    plain = {k: v for k, v in labelled.items() if k != "meta"}
    assert fhir.put(f"Observation/{oid}", plain).status_code == 200

    assert theirs.get(f"Observation/{oid}").status_code == 200
    assert theirs.get(f"Observation/{oid}/_history/1").status_code == 404
    assert _versions(theirs, f"Observation/{oid}/_history") == ["2"]
    assert patient.get(f"Observation/{oid}/_history/1").status_code == 200  # the patient's own
    assert _versions(patient, f"Observation/{oid}/_history") == ["2", "1"]


def test_paging_an_instance_history_tells_nothing_of_a_hidden_version_http_history(
        fhir, app, world):
    """R4 http.html#history (instance) with paging: a version hidden from the caller
    (another patient's) is neither on a page nor behind a cursor: each page's next link
    goes on from the last version shown, and there is none when no visible version is
    left."""
    import base64
    import json
    from urllib.parse import parse_qs, urlsplit

    me, other = world["mine"], world["other"]
    dr = clinician(app, fhir)
    scan_card(fhir, app, me, dr)
    first = fhir.create(f.observation(me, code="moved"))
    oid = first["id"]
    second = fhir.put(f"Observation/{oid}", {**first, "subject": {"reference": f"Patient/{other}"}})
    assert second.status_code == 200
    third = fhir.put(f"Observation/{oid}", {**second.get_json(), "subject": {"reference": f"Patient/{me}"}})
    assert third.status_code == 200
    hidden = fhir.get(f"Observation/{oid}/_history/2").get_json()["meta"]["lastUpdated"]

    seen, url, cursors = [], f"Observation/{oid}/_history?_count=1", []
    while url:
        r = dr.get(url)
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        seen += [e["resource"]["meta"]["versionId"] for e in body.get("entry", [])]
        nxt = [link["url"] for link in body.get("link", []) if link["relation"] == "next"]
        url = ""
        if nxt:
            parts = urlsplit(nxt[0])
            cursor = parse_qs(parts.query)["_cursor"][0]
            cursors.append(json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))))
            url = f"{parts.path.removeprefix('/fhir/')}?{parts.query}"
    assert seen == ["3", "1"]
    assert len(cursors) == 1 and cursors[0]["k"].endswith("/3"), cursors
    shown = third.get_json()["meta"]["lastUpdated"]
    assert cursors[0]["lu"][:23] == shown[:23] != hidden[:23] or hidden[:23] == shown[:23]
