"""Conditional create, update and delete: the spec's 0 / 1 / many outcomes.

FHIR R4 http.html#ccreate, http.html#cond-update, http.html#cdelete.
"""

from __future__ import annotations

from tests.factories import patient

SYS = "urn:oid:2.16.840.1.113883.2.4.6.3"


def with_id(value: str, **extra) -> dict:
    return patient(identifier=[{"system": SYS, "value": value}], **extra)


def count(fhir, query: str) -> int:
    return fhir.get(f"Patient?{query}&_summary=count").get_json()["total"]


def test_conditional_create_no_match_creates_http_ccreate(fhir):
    r = fhir.post("Patient", with_id("A1"), headers={"If-None-Exist": f"identifier={SYS}|A1"})
    assert r.status_code == 201
    assert count(fhir, f"identifier={SYS}|A1") == 1


def test_conditional_create_one_match_returns_it_without_writing_http_ccreate(fhir):
    first = fhir.create(with_id("A2"))
    r = fhir.post("Patient", with_id("A2", gender="male"),
                  headers={"If-None-Exist": f"identifier={SYS}|A2"})
    assert r.status_code == 200
    assert r.get_json()["id"] == first["id"]
    assert "gender" not in r.get_json()
    assert count(fhir, f"identifier={SYS}|A2") == 1


def test_conditional_create_many_matches_is_412_http_ccreate(fhir):
    fhir.create(with_id("A3"))
    fhir.create(with_id("A3"))
    r = fhir.post("Patient", with_id("A3"), headers={"If-None-Exist": f"identifier={SYS}|A3"})
    assert r.status_code == 412
    assert count(fhir, f"identifier={SYS}|A3") == 2


def test_conditional_create_unknown_parameter_is_400_not_ignored(fhir):
    """Ignoring an unknown criterion would widen the match: it must be rejected."""
    r = fhir.post("Patient", with_id("A4"), headers={"If-None-Exist": "no-such-param=1"})
    assert r.status_code == 400


def test_conditional_update_no_match_creates_http_cond_update(fhir):
    r = fhir.put(f"Patient?identifier={SYS}|B1", with_id("B1"))
    assert r.status_code == 201
    assert count(fhir, f"identifier={SYS}|B1") == 1


def test_conditional_update_one_match_updates_it_http_cond_update(fhir):
    existing = fhir.create(with_id("B2"))
    r = fhir.put(f"Patient?identifier={SYS}|B2", with_id("B2", gender="female"))
    assert r.status_code == 200
    body = r.get_json()
    assert body["id"] == existing["id"] and body["meta"]["versionId"] == "2"
    assert body["gender"] == "female"


def test_conditional_update_body_id_must_match_the_match_http_cond_update(fhir):
    fhir.create(with_id("B3"))
    r = fhir.put(f"Patient?identifier={SYS}|B3", with_id("B3", id="other"))
    assert r.status_code == 400


def test_conditional_update_many_matches_is_412_http_cond_update(fhir):
    fhir.create(with_id("B4"))
    fhir.create(with_id("B4"))
    r = fhir.put(f"Patient?identifier={SYS}|B4", with_id("B4", gender="male"))
    assert r.status_code == 412
    assert count(fhir, "gender=male") == 0


def test_conditional_update_without_criteria_is_400(fhir):
    assert fhir.put("Patient", with_id("B5")).status_code == 400


def test_conditional_delete_outcomes_http_cdelete(fhir):
    assert fhir.delete(f"Patient?identifier={SYS}|C0").status_code == 200  # no match: fine
    one = fhir.create(with_id("C1"))
    r = fhir.delete(f"Patient?identifier={SYS}|C1")
    assert r.status_code == 200
    assert fhir.get(f"Patient/{one['id']}").status_code == 410
    fhir.create(with_id("C2"))
    fhir.create(with_id("C2"))
    assert fhir.delete(f"Patient?identifier={SYS}|C2").status_code == 412
    assert count(fhir, f"identifier={SYS}|C2") == 2
