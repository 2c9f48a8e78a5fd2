"""JSON Patch (http.html#patch) and history (http.html#history)."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.factories import patient


def test_json_patch_applies_and_versions_http_patch(fhir):
    rid = fhir.create(patient(gender="male"))["id"]
    ops = [{"op": "replace", "path": "/gender", "value": "female"},
           {"op": "add", "path": "/active", "value": True}]
    r = fhir.patch(f"Patient/{rid}", ops)
    assert r.status_code == 200
    body = r.get_json()
    assert body["gender"] == "female" and body["active"] is True
    assert body["meta"]["versionId"] == "2"


def test_json_patch_result_is_validated_http_patch(fhir):
    rid = fhir.create(patient())["id"]
    r = fhir.patch(f"Patient/{rid}", [{"op": "add", "path": "/birthDate", "value": "nope"}])
    assert r.status_code == 400
    assert r.get_json()["issue"][0]["expression"] == ["Patient.birthDate"]
    assert fhir.get(f"Patient/{rid}").get_json()["meta"]["versionId"] == "1"


def test_json_patch_failed_test_op_and_bad_paths_http_patch(fhir):
    rid = fhir.create(patient(gender="male"))["id"]
    r = fhir.patch(f"Patient/{rid}", [{"op": "test", "path": "/gender", "value": "female"}])
    assert r.status_code == 422
    r = fhir.patch(f"Patient/{rid}", [{"op": "remove", "path": "/nothing/here"}])
    assert r.status_code == 422
    r = fhir.patch(f"Patient/{rid}", {"op": "replace"})
    assert r.status_code == 400
    r = fhir.patch(f"Patient/{rid}", [{"op": "replace", "path": "/id", "value": "other"}])
    assert r.status_code == 422
    r = fhir.patch(f"Patient/{rid}", [{"op": "jump", "path": "/gender"}])
    assert r.status_code in (400, 422)


def test_json_patch_if_match_and_media_type_http_patch(fhir):
    rid = fhir.create(patient())["id"]
    ops = [{"op": "add", "path": "/active", "value": False}]
    assert fhir.patch(f"Patient/{rid}", ops, headers={"If-Match": 'W/"9"'}).status_code == 412
    assert fhir.patch(f"Patient/{rid}", ops, content_type="application/fhir+json").status_code == 415
    assert fhir.patch("Patient/missing", ops).status_code == 404


def test_instance_history_newest_first_with_methods_http_history(fhir):
    created = fhir.create(patient(family="v1"))
    rid = created["id"]
    fhir.put(f"Patient/{rid}", {**created, "name": [{"family": "v2"}]})
    fhir.delete(f"Patient/{rid}")
    bundle = fhir.get(f"Patient/{rid}/_history").get_json()
    assert bundle["type"] == "history"
    entries = bundle["entry"]
    assert [e["response"]["etag"] for e in entries] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "POST"]
    assert "resource" not in entries[0]
    assert entries[1]["resource"]["name"][0]["family"] == "v2"
    assert entries[2]["response"]["status"].startswith("201")


def test_type_and_system_history_with_since_and_paging_http_history(fhir):
    ids = [fhir.create(patient(family=f"p{i}"))["id"] for i in range(5)]
    fhir.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    assert len(fhir.get("Patient/_history").get_json()["entry"]) == 5
    assert len(fhir.get("_history").get_json()["entry"]) == 6
    since = fhir.get(f"Patient/{ids[2]}").get_json()["meta"]["lastUpdated"]
    recent = fhir.get(f"Patient/_history?_since={since}").get_json()
    assert {e["resource"]["id"] for e in recent["entry"]} >= set(ids[2:])
    assert ids[0] not in {e["resource"]["id"] for e in recent["entry"]}

    seen: list[str] = []
    url = "Patient/_history?_count=2"
    pages = 0
    while url:
        page = fhir.get(url).get_json()
        pages += 1
        seen += [e["resource"]["id"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = "/".join(urlsplit(nxt[0]).path.split("/")[2:]) + "?" + urlsplit(nxt[0]).query if nxt else None
    assert pages == 3
    assert sorted(seen) == sorted(ids)
    assert seen == list(reversed(ids))  # newest first


def test_history_paging_is_stable_while_others_write_http_history(fhir):
    for i in range(4):
        fhir.create(patient(family=f"p{i}"))
    first = fhir.get("Patient/_history?_count=2").get_json()
    nxt = [link["url"] for link in first["link"] if link["relation"] == "next"][0]
    fhir.create(patient(family="late"))  # newer than every page: must not shift the next page
    second = fhir.get("Patient/_history?" + urlsplit(nxt).query).get_json()
    first_ids = [e["resource"]["id"] for e in first["entry"]]
    second_ids = [e["resource"]["id"] for e in second["entry"]]
    assert not set(first_ids) & set(second_ids)
    assert len(second_ids) == 2


def test_history_bad_parameters_are_400(fhir):
    assert fhir.get("Patient/_history?_since=yesterday").status_code == 400
    assert fhir.get("Patient/_history?_count=many").status_code == 400
    assert fhir.get("Patient/_history?_cursor=%%%").status_code == 400
    assert fhir.get("Patient/nope/_history").status_code == 404
