"""Group-level Bulk Data export (FHIR Bulk Data Access IG 2.0.0, export.html,
"Endpoint - Group of Patients": ``GET|POST [base]/Group/[id]/$export``), end to end
over real HTTP with ``requests`` and a SMART Backend Services token: kick-off,
status polls, manifest and NDJSON downloads. The export holds the compartments of
the group's members the client reaches; a member out of reach is reported in the
manifest's ``error`` file, and what is hidden from the client never appears."""

from __future__ import annotations

import pytest

from tests.conftest import Http, http_as

from .test_bulk_export import (
    KICKOFF,
    ORG_A,
    ORG_B,
    SHOWN,
    add_client,
    backend_token,
    export,
    kickoff,
    ndjson,
    setup_world,
    wait_complete,
)

SCOPE = "system/*.rs system/Group.c"


@pytest.fixture
def cohort(live):
    """``setup_world``'s patients (org A treats ``treated``, nobody ``other``); org A's
    client made a Group of both, and org B's client one of its own."""
    url, app = live
    data = setup_world(app, http_as(live))
    data["a"] = Http(url, backend_token(url, "lab-a", add_client(app, "lab-a", ORG_A, SCOPE),
                                        SCOPE))
    data["b"] = Http(url, backend_token(url, "lab-b", add_client(app, "lab-b", ORG_B, SCOPE),
                                        SCOPE))
    data["group"] = _group(data["a"], data["treated"], data["other"])
    data["b_group"] = _group(data["b"], data["treated"])
    return data


def _group(http: Http, *members: str, **extra) -> str:
    body = {"resourceType": "Group", "type": "person", "actual": True, **extra}
    if members:
        body["member"] = [{"entity": {"reference": f"Patient/{m}"}} for m in members]
    r = http.post("Group", body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_group_export_kickoff_poll_manifest_download_export_html(live, cohort):
    """export.html#endpoint---group-of-patients, #bulk-data-kick-off-request (202 +
    Content-Location), #bulk-data-status-request (manifest), #file-request (NDJSON):
    the reachable member's compartment, without the record they restricted and with
    their identity number masked; the member out of reach is left out and reported
    as not known in ``error``."""
    url, _ = live
    a, gid = cohort["a"], cohort["group"]
    manifest, found = export(a, f"Group/{gid}/$export")
    assert manifest["request"] == f"{url}/Group/{gid}/$export"
    assert manifest["requiresAccessToken"] is True
    assert {o["type"]: o["count"] for o in manifest["output"]} == {
        "Patient": 1, "Observation": 3, "DiagnosticReport": 1}
    assert [p["id"] for p in found["Patient"]] == [cohort["treated"]]
    assert found["Patient"][0]["identifier"][0]["value"] == SHOWN
    assert sorted(o["id"] for o in found["Observation"]) == sorted(cohort["obs"])
    assert not {cohort["hidden"], *cohort["foreign"]} & {o["id"] for o in found["Observation"]}
    assert [e["type"] for e in manifest["error"]] == ["OperationOutcome"]
    outcomes = ndjson(a, manifest["error"][0]["url"])
    assert len(outcomes) == 1
    issue = outcomes[0]["issue"][0]
    assert issue["code"] == "not-found" and cohort["other"] in issue["diagnostics"]
    # Audited as the other levels are: the exported patient's access trail shows it,
    # the patient left out of the export sees nothing.
    mine = http_as(live, "patient", "patient/*.rs", patient=cohort["treated"])
    assert any(e["resource"]["subtype"][0]["code"] == "export"
               for e in mine.get("AuditEvent?_count=100").json()["entry"])
    theirs = http_as(live, "patient", "patient/*.rs", patient=cohort["other"])
    assert not any(e["resource"]["subtype"][0]["code"] == "export"
                   for e in theirs.get("AuditEvent?_count=100").json().get("entry", []))
    # The files are the kicking-off client's alone.
    assert cohort["b"].session.get(manifest["output"][0]["url"], timeout=10).status_code == 404


def test_group_export_post_type_and_patient_narrow_it(live, cohort):
    """export.html#query-parameters on POST (a Parameters body): ``_type`` limits the
    types, ``patient`` the members."""
    a, gid = cohort["a"], cohort["group"]
    r = a.post(f"Group/{gid}/$export", {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"},
        {"name": "patient", "valueReference": {"reference": f"Patient/{cohort['treated']}"}}]},
        headers=KICKOFF)
    assert r.status_code == 202, r.text
    done = wait_complete(a, r.headers["Content-Location"]).json()
    assert {o["type"]: o["count"] for o in done["output"]} == {"Patient": 1}
    assert done["error"] == []  # the member out of reach was not asked for


def test_a_group_without_members_exports_nothing(live, cohort):
    """export.html#response---complete-status: ``output`` is empty when nothing matches."""
    empty = _group(cohort["a"], name="empty")
    manifest, found = export(cohort["a"], f"Group/{empty}/$export")
    assert manifest["output"] == [] and manifest["error"] == [] and found == {}


def test_export_of_a_group_the_caller_cannot_read_is_404(live, cohort):
    """Another organisation's Group answers as one that does not exist, before any
    export is queued; the operator, who reads every Group, may export it."""
    a = cohort["a"]
    hidden = kickoff(a, f"Group/{cohort['b_group']}/$export")
    never = kickoff(a, "Group/never-used/$export")
    assert hidden.status_code == never.status_code == 404
    assert hidden.json()["resourceType"] == "OperationOutcome"
    assert hidden.json()["issue"][0]["code"] == never.json()["issue"][0]["code"]
    # The refused kick-off held no export slot: the client's next export runs.
    export(a, f"Group/{cohort['group']}/$export", params={"_type": "Patient"})
    _, found = export(http_as(live), f"Group/{cohort['b_group']}/$export")
    assert [p["id"] for p in found["Patient"]] == [cohort["treated"]]


def test_group_export_only_on_group_instances(live, cohort):
    """The operation is defined on Group instances; on another type it is unknown."""
    r = kickoff(cohort["a"], f"Patient/{cohort['treated']}/$export")
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
