"""Every FHIR R4 example of the three types round-trips (resource pages' examples).

Stored form = the JSON as accepted: reading back gives the example unchanged apart
from server-managed meta (DESIGN.md section 4). Examples are loaded with PUT in one
transaction (their references point at each other), plus minimal stand-ins for
the few targets the example set does not include; then each is also POSTed.
"""

from __future__ import annotations

import json

import pytest

from fhirserver.model.references import iter_references, parse_reference
from tests.conftest import SHARED

EXAMPLES = SHARED / "spec-examples"
TYPES = ("Patient", "Observation", "DiagnosticReport")


def examples() -> list[dict]:
    out = []
    for rtype in TYPES:
        for path in sorted((EXAMPLES / rtype).glob("*.json")):
            out.append(json.loads(path.read_text()))
    return out


def strip_server_meta(resource: dict) -> dict:
    out = dict(resource)
    meta = {k: v for k, v in (out.pop("meta", None) or {}).items()
            if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    return out


def stand_ins(resources: list[dict]) -> list[dict]:
    present = {(r["resourceType"], r["id"]) for r in resources}
    missing = set()
    for r in resources:
        for _, ref in iter_references(r):
            local = parse_reference(ref)
            if local and local.type in (*TYPES, "Group") and (local.type, local.id) not in present:
                missing.add((local.type, local.id))
    out = []
    for rtype, rid in sorted(missing):
        body = {"resourceType": rtype, "id": rid}
        if rtype == "Group":
            body.update({"type": "person", "actual": True})
        elif rtype != "Patient":
            body.update({"status": "final", "code": {"text": "stand-in"}})
        out.append(body)
    return out


@pytest.fixture
def loaded(fhir):
    resources = examples()
    assert len(resources) == 92
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in resources + stand_ins(resources)
    ]
    r = fhir.post("", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert r.status_code == 200, r.get_json()
    return resources


def test_every_example_round_trips_by_put(fhir, loaded):
    for example in loaded:
        got = fhir.get(f"{example['resourceType']}/{example['id']}")
        assert got.status_code == 200
        assert strip_server_meta(got.get_json()) == strip_server_meta(example), example["id"]


def test_every_example_round_trips_by_post(fhir, loaded):
    for example in loaded:
        r = fhir.post(example["resourceType"], example)
        assert r.status_code == 201, (example["id"], r.get_json())
        new_id = r.get_json()["id"]
        got = fhir.get(f"{example['resourceType']}/{new_id}").get_json()
        assert strip_server_meta({**got, "id": example["id"]}) == strip_server_meta(example)
