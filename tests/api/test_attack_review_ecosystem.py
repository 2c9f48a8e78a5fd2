"""The newest features attacked (FHIR XML, the clinician directory and care teams,
Bulk Data export): each test is one way in that a caller with a valid token for
someone else, a fuzzer or a browser could try, and what must stop it."""

from __future__ import annotations

from fhirserver.auth import access, reach_cache
from tests import factories as f
from tests.api.test_bulk_export import KICKOFF, setup_world, wait_complete
from tests.api.test_care_team import member
from tests.api.test_disclosure import As, treat
from tests.conftest import http_as, mint

ORG_A = "Organization/org-a"


def test_bulk_export_files_are_not_for_another_token_kind_of_the_same_client(live):
    """export.html#file-request, requiresAccessToken: the status and files are for the
    client that kicked the export off, authorised as it was (SMART Backend Services).
    A confidential client may also sign users in (authorization_code): a patient's
    token issued to that client is no system token, and must not read the export of
    every patient the organisation treats (404, as for a job that does not exist)."""
    _url, app = live
    world = setup_world(app, http_as(live))
    system = http_as(live, "system", "system/*.rs", subject="portal", client_id="portal",
                     organization=ORG_A)
    r = system.get("$export", headers=KICKOFF)
    assert r.status_code == 202, r.text
    status_url = r.headers["Content-Location"]
    done = wait_complete(system, status_url)
    assert done.status_code == 200, done.text
    files = [o["url"] for o in done.json()["output"]]
    assert files
    callers = {
        "patient": http_as(live, "patient", "patient/*.rs", subject="other-person",
                           client_id="portal", fhirUser=f"Patient/{world['other']}"),
        "user": http_as(live, "user", "user/*.rs", subject="dr-nobody", client_id="portal",
                        fhirUser="Practitioner/nobody", organization=ORG_A),
    }
    for kind, http in callers.items():
        assert http.session.get(status_url, timeout=30).status_code == 404, kind
        for u in files:
            got = http.session.get(u, timeout=30)
            assert got.status_code == 404, (kind, u, got.text[:200])
        assert http.session.delete(status_url, timeout=30).status_code == 404, kind
    assert system.session.get(files[0], timeout=30).status_code == 200


def test_recreated_patient_id_opens_nothing_to_the_deleted_patients_clinicians(app, fhir):
    """http.html#delete: after a delete, an update at the same id makes a new
    current version (a Patient registered again under a reused id). The care
    relationships of the deleted patient (a care team membership, a card scan) are
    not that new record's: the clinicians who treated the deleted patient must not
    read the Patient registered at the id afterwards (404, as for any record out of
    reach)."""
    pid = fhir.create(f.patient("First"))["id"]
    assert fhir.post(f"Patient/{pid}/$care-team",
                     member("Practitioner/dr-old")).status_code == 200
    treat(app, "Practitioner/dr-scan", pid)
    callers = {who: As(fhir, mint(app, "user", "user/*.rs", subject=who,
                                  fhirUser=f"Practitioner/{who}",
                                  organization="Organization/hospital"))
               for who in ("dr-old", "dr-scan")}
    for who, caller in callers.items():
        assert caller.get(f"Patient/{pid}").status_code == 200, who
    assert fhir.delete(f"Patient/{pid}").status_code in (200, 204)
    again = fhir.put(f"Patient/{pid}", {**f.patient("Second"), "id": pid})
    assert again.status_code in (200, 201), again.get_data(as_text=True)
    reach_cache.clear()  # another worker, reading them afresh
    for who, caller in callers.items():
        assert caller.get(f"Patient/{pid}").status_code == 404, who
        assert caller.get(f"Patient?_id={pid}").get_json().get("total") == 0, who
    team = fhir.get(f"Patient/{pid}/$care-team").get_json()
    assert "participant" not in team


def test_care_team_of_a_deleted_patient_is_gone_not_rebuilt(app, fhir):
    """http.html#delete: a deleted resource reads 410 from then on. ``$care-team`` on
    a deleted Patient is an operation on a resource that is gone: it answers 404 and
    neither writes the CareTeam again nor opens a care relationship (which the next
    Patient registered at that id would inherit)."""
    pid = fhir.create(f.patient("Leaving"))["id"]
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    assert fhir.get(f"Patient/{pid}/$care-team").status_code == 404
    assert fhir.post(f"Patient/{pid}/$care-team",
                     member("Practitioner/dr-late")).status_code == 404
    assert fhir.get(f"CareTeam/care-team-{pid}").status_code in (404, 410)
    db = app.extensions["fhirserver"].repo.db
    assert db[access.CARE].count_documents({"patient": pid}) == 0
