"""Bad input is a 4xx OperationOutcome, never a 500, and writes nothing.

FHIR R4 http.html#summary ("the server SHALL return ... an OperationOutcome" for
errors), operationoutcome.html (issue.expression is the FHIRPath of the element at
fault), http.html#transaction and #trules (Bundle processing rules), search.html
(dates, errors), operations.html#request (Parameters bodies).
"""

from __future__ import annotations

import pytest

from tests.factories import observation, patient


def outcome(r, status: int = 400) -> dict:
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    body = r.get_json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and all(i["severity"] and i["code"] and i.get("diagnostics")
                                 for i in body["issue"])
    return body


def expressions(body: dict) -> list[str]:
    return [e for i in body["issue"] for e in i.get("expression", ())]


def total(fhir, rtype: str) -> int:
    r = fhir.get(f"{rtype}?_summary=count")
    assert r.status_code == 200, r.get_json()
    return r.get_json()["total"]


def tx(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict, **request: object) -> dict:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"],
                                              **request}}


# -- 1. resourceType that is not a string (json.html#resources) -----------------------------


@pytest.mark.parametrize("rtype", [{"a": 1}, ["Patient"]])
@pytest.mark.parametrize("how", ["post", "put", "conditional-put"])
def test_non_string_resource_type_is_400_naming_it_json_resources(fhir, rtype, how):
    existing = fhir.create(patient())["id"]
    body = {"resourceType": rtype, "name": [{"family": "X"}]}
    if how == "post":
        r = fhir.post("Patient", body)
    elif how == "put":
        r = fhir.put(f"Patient/{existing}", {**body, "id": existing})
    else:
        r = fhir.put("Patient?family=Nobody", body)
    assert "Patient.resourceType" in expressions(outcome(r))
    assert total(fhir, "Patient") == 1


@pytest.mark.parametrize("rtype", [{"a": 1}, ["Observation"], 5])
def test_non_string_contained_resource_type_is_400_json_resources(fhir, rtype):
    body = patient(contained=[{"resourceType": rtype, "id": "c1"}])
    r = fhir.post("Patient", body)
    assert "Patient.contained[0].resourceType" in expressions(outcome(r))
    assert total(fhir, "Patient") == 0


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_non_string_resource_type_in_bundle_entry_is_400_http_transaction(fhir, kind):
    bad = {"resourceType": {"x": 1}, "name": [{"family": "X"}]}
    bundle = tx(post(patient()), post(patient()),
                {"resource": bad, "request": {"method": "POST", "url": "Patient"}}, kind=kind)
    r = fhir.post("", bundle)
    if kind == "transaction":
        assert "Bundle.entry[2].resource.resourceType" in expressions(outcome(r))
        assert total(fhir, "Patient") == 0
    else:
        assert r.status_code == 200
        entry = r.get_json()["entry"][2]["response"]
        assert entry["status"].startswith("400")
        assert "Bundle.entry[2].resource.resourceType" in expressions(entry["outcome"])
        assert total(fhir, "Patient") == 2


# -- 5. operation bodies that are JSON but no Parameters (operations.html#request) ----------

NOT_PARAMETERS = ["[]", '"x"', "42", "null", "true",
                  '{"resourceType": "Parameters", "parameter": 5}',
                  '{"resourceType": "Parameters", "parameter": {"name": "x"}}',
                  '{"resourceType": ["Parameters"]}',
                  '{"resourceType": "Parameters", "parameter": [{"name": 5, "valueString": "a"}]}',
                  '{"resourceType": "Parameters", "parameter": [{"name": "x", "valueString": {}}]}']

OPERATIONS = ["Patient/{pid}/$everything", "Observation/$lastn", "Patient/$ihe-pix",
              "Patient/$merge", "Patient/$match", "Patient/{pid}/$break-glass",
              "Patient/{pid}/$consent", "Patient/{pid}/$care-team", "Patient/$scan-card",
              "Patient/{pid}/$bind-family", "Patient/{pid}/$accept-family",
              "Patient/{pid}/$unbind-family"]


@pytest.mark.parametrize("body", NOT_PARAMETERS)
def test_operation_body_that_is_no_parameters_is_400_operations_request(fhir, body):
    pid = fhir.create(patient())["id"]
    for url in OPERATIONS:
        r = fhir.post(url.format(pid=pid), body)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.get_data(as_text=True)[:300])
        assert r.get_json()["resourceType"] == "OperationOutcome", url
    assert total(fhir, "Patient") == 1


@pytest.mark.parametrize("body", ["[]", '"x"', "42", "null", '{"patient": 5, "client_id": []}'])
def test_launch_with_json_that_is_no_object_is_400(client, body):
    r = client.post("/oauth/launch", data=body, content_type="application/json")
    assert 400 <= r.status_code < 500, r.get_data(as_text=True)
    assert r.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("body", ["[]", '"x"', "42", "null", '{"grant_type": 5}'])
def test_token_with_json_body_is_oauth_error_rfc6749_5_2(client, body):
    r = client.post("/oauth/token", data=body, content_type="application/json")
    assert r.status_code == 400
    assert r.get_json()["error"] == "invalid_request"


def test_match_count_must_be_a_positive_integer_not_a_boolean(fhir):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": patient()}, {"name": "count", "valueInteger": True}]}
    r = fhir.post("Patient/$match", body)
    assert "Parameters.parameter[1]" in expressions(outcome(r))


# -- 6. versions that are no version number (references.html#literal, http.html#vread) -----


@pytest.mark.parametrize("version", ["zz", "0", "9" * 30])
def test_reference_to_a_version_that_is_no_version_is_422_naming_it_references_literal(
        fhir, version):
    """Version ids here are integers from 1: any other names no version, so the reference
    does not resolve (a 422, as for an unknown id), on create, update and patch."""
    pid = fhir.create(patient())["id"]
    ref = {"reference": f"Patient/{pid}/_history/{version}"}
    r = fhir.post("Observation", observation(subject=ref))
    assert "Observation.subject.reference" in expressions(outcome(r, 422))
    r = fhir.put("Observation/o1", observation(id="o1", subject=ref))
    assert "Observation.subject.reference" in expressions(outcome(r, 422))
    r = fhir.patch(f"Patient/{pid}", [{"op": "add", "path": "/link",
                                       "value": [{"type": "seealso", "other": ref}]}])
    assert "Patient.link[0].other.reference" in expressions(outcome(r, 422))
    assert total(fhir, "Observation") == 0
    assert fhir.get(f"Patient/{pid}").get_json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("version", ["²", "١", "9" * 5000])
def test_vread_of_a_version_that_is_no_ascii_number_is_404_http_vread(fhir, version):
    pid = fhir.create(patient())["id"]
    outcome(fhir.get(f"Patient/{pid}/_history/{version}"), 404)


@pytest.mark.parametrize("url,name", [
    ("Patient?_count=²", "_count"), ("Patient?_count=" + "9" * 5000, "_count"),
    ("Patient/_history?_count=²", "_count"), ("_history?_count=³", "_count"),
    ("Patient/{pid}/$everything?_count=²", "_count"), ("Observation/$lastn?max=²", "max"),
    ("Observation/$lastn?max=0", "max"), ("AuditEvent?_count=²", "_count"),
    ("Patient/{pid}/Observation?_count=²", "_count"),
])
def test_integer_parameters_with_unicode_digits_are_400_search_count(fhir, url, name):
    pid = fhir.create(patient())["id"]
    assert name in expressions(outcome(fhir.get(url.format(pid=pid))))


def test_if_match_with_a_long_number_is_a_412_not_a_crash_http_concurrency(fhir):
    pid = fhir.create(patient())["id"]
    r = fhir.put(f"Patient/{pid}", patient(id=pid), headers={"If-Match": 'W/"' + "9" * 5000 + '"'})
    assert 400 <= r.status_code < 500
    outcome(r, r.status_code)


# -- 7. Bundle.entry.request elements of the wrong JSON type (bundle.html#Bundle.entry.request)


@pytest.mark.parametrize("field,value", [
    ("ifMatch", 5), ("ifMatch", {"a": 1}), ("ifNoneExist", 5), ("ifNoneMatch", [1]),
    ("ifModifiedSince", 5), ("url", 5), ("method", {"a": 1}), ("method", ["PUT"]),
])
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_request_element_of_wrong_type_is_400_naming_it_bundle_request(fhir, kind, field, value):
    pid = fhir.create(patient())["id"]
    entry = {"resource": patient(id=pid), "request": {"method": "PUT", "url": f"Patient/{pid}"}}
    entry["request"][field] = value
    r = fhir.post("", tx(post(patient(family="Other")), entry, kind=kind))
    where = f"Bundle.entry[1].request.{field}"
    if kind == "transaction":
        assert where in expressions(outcome(r))
        assert total(fhir, "Patient") == 1
    else:
        assert r.status_code == 200
        response = r.get_json()["entry"][1]["response"]
        assert response["status"].startswith("400")
        assert where in expressions(response["outcome"])
    assert fhir.get(f"Patient/{pid}").get_json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("value", [5, {"a": 1}, ["urn:uuid:x"]])
def test_full_url_that_is_no_string_is_400_bundle_fullurl(fhir, value):
    entry = {**post(patient()), "fullUrl": value}
    r = fhir.post("", tx(entry))
    assert "Bundle.entry[0].fullUrl" in expressions(outcome(r))
    assert total(fhir, "Patient") == 0


# -- 8. one resource written twice in a transaction (http.html#trules) ---------------------


def _put(rid: str, family: str = "Chalmers") -> dict:
    return {"resource": patient(family=family, id=rid),
            "request": {"method": "PUT", "url": f"Patient/{rid}"}}


def _patch(rid: str) -> dict:
    return {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                         "data": "W10="}, "request": {"method": "PATCH", "url": f"Patient/{rid}"}}


@pytest.mark.parametrize("case", ["new-id", "existing-id", "put-and-delete", "put-and-patch",
                                  "conditional-put", "conditional-create"])
def test_same_resource_twice_in_a_transaction_is_400_naming_both_http_trules(fhir, case):
    existing = fhir.create(patient(family="Known"))["id"]
    second = {
        "new-id": _put("new-1"),
        "existing-id": _put(existing, "Changed"),
        "put-and-delete": {"request": {"method": "DELETE", "url": f"Patient/{existing}"}},
        "put-and-patch": _patch(existing),
        "conditional-put": {"resource": patient(family="Known"),
                            "request": {"method": "PUT", "url": "Patient?family=Known"}},
        "conditional-create": post(patient(family="Known"), ifNoneExist="family=Known"),
    }[case]
    first = _put("new-1") if case == "new-id" else _put(existing, "Again")
    r = fhir.post("", tx(post(patient(family="Bystander")), first, second))
    body = outcome(r)
    assert {"Bundle.entry[1]", "Bundle.entry[2]"} <= set(expressions(body))
    assert "entry[1]" in body["issue"][0]["diagnostics"]
    assert "entry[2]" in body["issue"][0]["diagnostics"]
    assert total(fhir, "Patient") == 1
    assert fhir.get(f"Patient/{existing}").get_json()["meta"]["versionId"] == "1"


def test_same_full_url_resolving_twice_is_still_one_write_http_trules(fhir):
    """Distinct resources stay accepted: the check is on identities, not on types."""
    r = fhir.post("", tx(_put("a-1"), _put("a-2"), post(patient()), post(patient())))
    assert r.status_code == 200, r.get_json()
    assert total(fhir, "Patient") == 4


# -- 4. dates at the edges of time (search.html#date: ranges, in the server's zone) ---------


def _ids(r) -> set[str]:
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return {e["resource"]["id"] for e in r.get_json().get("entry", ())
            if e.get("search", {}).get("mode") == "match"}


def test_birthdate_in_year_one_east_of_utc_search_date(fhir):
    """The default zone is Asia/Shanghai: year 1 there begins before year 1 in UTC,
    which no datetime holds; the range is clamped to the first instant, and still
    finds the right patients."""
    ancient = fhir.create(patient(birthDate="0001-06-01"))["id"]
    modern = fhir.create(patient(birthDate="1990-01-01"))["id"]
    last = fhir.create(patient(birthDate="9999-12-31"))["id"]
    assert _ids(fhir.get("Patient?birthdate=0001")) == {ancient}
    assert _ids(fhir.get("Patient?birthdate=0001-01-01")) == set()
    assert _ids(fhir.get("Patient?birthdate=le9999")) == {ancient, modern, last}
    assert _ids(fhir.get("Patient?birthdate=ge0001")) == {ancient, modern, last}
    assert _ids(fhir.get("Patient?birthdate=9999-12-31")) == {last}
    assert _ids(fhir.get("Patient?birthdate=ap0001-01-01")) == {ancient}
    assert _ids(fhir.get("Patient?birthdate=gt9999-12-31")) == set()


@pytest.mark.parametrize("url", [
    "Observation?date=0001-01-01T00:00:00%2B14:00",
    "Observation?date=9999-12-31T23:59:59-14:00",
    "Observation?date=le9999-12-31T23:59:59-14:00",
    "Patient?_lastUpdated=ap0001-01-01",
    "Patient?_lastUpdated=gt9999-12-31T23:59:59.999-14:00",
    "_history?_since=9999-12-31T23:59:59-14:00",
    "_history?_since=0001-01-01T00:00:00%2B14:00",
    "Patient/_history?_since=9999-12-31T23:59:59-14:00",
    "Patient/{pid}/_history?_since=0001-01-01T00:00:00%2B14:00",
    "Observation/$lastn?date=0001-01-01T00:00:00%2B14:00",
    "Patient/{pid}/$everything?_since=9999-12-31T23:59:59-14:00",
    "Patient/{pid}/$everything?start=0001-01-01T00:00:00%2B14:00&end=9999-12-31T23:59:59-14:00",
])
def test_dates_beyond_the_edges_of_time_in_utc_are_no_error_search_date(fhir, url):
    pid = fhir.create(patient())["id"]
    fhir.create(observation(pid, effectiveDateTime="0001-01-01T00:00:00+14:00"))
    r = fhir.get(url.format(pid=pid))
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert r.get_json()["resourceType"] == "Bundle"


def test_history_since_the_first_instant_has_every_version_http_history(fhir):
    pid = fhir.create(patient())["id"]
    fhir.put(f"Patient/{pid}", patient(id=pid, gender="male"))
    r = fhir.get(f"Patient/{pid}/_history?_since=0001-01-01T00:00:00%2B14:00")
    assert len(r.get_json()["entry"]) == 2
    r = fhir.get("_history?_since=9999-12-31T23:59:59-14:00")
    assert r.status_code == 200 and not r.get_json().get("entry")


def test_history_since_a_leap_second_is_read_as_its_minutes_last_second_http_history(fhir):
    """datatypes.html#instant allows a leap second (``23:59:60``): ``_since`` with one is
    an instant like any other (read as ``23:59:59``), not a 400."""
    pid = fhir.create(patient())["id"]
    r = fhir.get(f"Patient/{pid}/_history?_since=2016-12-31T23:59:60Z")
    assert r.status_code == 200, r.get_json()
    assert len(r.get_json()["entry"]) == 1
    r = fhir.get(f"Patient/{pid}/_history?_since=2999-12-31T23:59:60.5%2B08:00")
    assert r.status_code == 200 and not r.get_json().get("entry"), r.get_json()
    assert fhir.get(f"Patient/{pid}/_history?_since=2016-12-31T23:59:61Z").status_code == 400


def test_a_resource_dated_at_the_edges_of_time_is_stored_and_found_search_date(fhir):
    pid = fhir.create(patient())["id"]
    early = fhir.create(observation(pid, effectiveDateTime="0001-01-01T00:00:00+14:00"))["id"]
    late = fhir.create(observation(pid, effectivePeriod={"start": "9999-12-31T23:59:59-14:00"}))["id"]
    assert _ids(fhir.get("Observation?date=le9999")) == {early, late}
    assert _ids(fhir.get("Observation?date=lt1000")) == {early}
    assert _ids(fhir.get("Observation?date=ge9999")) == {late}


def test_unencoded_plus_in_a_zone_offset_reads_as_plus_like_hapi_search_date(fhir):
    """``date=eq2014-05-27T07:44:08+00:00`` sent without encoding the ``+`` arrives as a
    space: read as the offset it was meant to be, not refused."""
    pid = fhir.create(patient())["id"]
    oid = fhir.create(observation(pid, effectiveDateTime="2014-05-27T07:44:08+00:00"))["id"]
    fhir.create(observation(pid, effectiveDateTime="2014-05-27T07:44:08+08:00"))
    assert _ids(fhir.get("Observation?date=eq2014-05-27T07:44:08+00:00")) == {oid}
    assert _ids(fhir.get("Observation?date=2014-05-27T15:44:08+08:00")) == {oid}
    r = fhir.get(f"Patient/{pid}/_history?_since=2000-01-01T00:00:00+08:00")
    assert r.status_code == 200 and len(r.get_json()["entry"]) == 1


# -- 2. nesting (json.html; a limit keeps every walk over a resource within the stack) ------


def _nested_extension(levels: int) -> dict:
    node: dict = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(levels - 1):
        node = {"url": "http://example.org/branch", "extension": [node]}
    return node


def test_deeply_nested_extensions_are_400_before_validation_json(fhir):
    r = fhir.post("Patient", patient(extension=[_nested_extension(150)]))
    assert "64 levels" in outcome(r)["issue"][0]["diagnostics"]
    r = fhir.post("", tx(post(patient(extension=[_nested_extension(150)]))))
    outcome(r)
    assert total(fhir, "Patient") == 0


@pytest.mark.parametrize(("url", "body", "name"), [
    ("Patient", '{"resourceType": "Patient", "gender": "male", "gender": "female"}', "gender"),
    ("Patient", '{"resourceType": "Patient", "name": [{"family": "Li", "family": "Wang"}]}',
     "family"),
    ("", ('{"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": '
     '"POST", "url": "Patient"}, "resource": {"resourceType": "Patient", "id": "a", "id": "b"}}]}'),
     "id"),
])
def test_a_name_twice_in_one_object_is_400_naming_it_json(fhir, url, body, name):
    """json.html is RFC 8259, whose object names SHOULD be unique: with one twice, what
    the resource says depends on the reader (a gateway in front may read the first),
    so the server refuses it rather than keep the last."""
    r = fhir.post(url, body)
    text = outcome(r)["issue"][0]["diagnostics"]
    assert f"the name '{name}' appears twice in one object" in text, text
    assert total(fhir, "Patient") == 0


def test_nesting_within_the_limit_is_accepted_json(fhir):
    fhir.create(patient(extension=[_nested_extension(25)]))
    r = fhir.post("", tx(post(patient(extension=[_nested_extension(25)]))))
    assert r.status_code == 200, r.get_json()
    assert total(fhir, "Patient") == 2


def test_nesting_limit_is_a_setting(app, fhir):
    from fhirserver.config import ENV_NAMES

    assert ENV_NAMES["max_json_depth"] == "FHIR_MAX_JSON_DEPTH"
    st = app.extensions["fhirserver"]
    st.settings = st.settings.with_(max_json_depth=8)
    outcome(fhir.post("Patient", patient(extension=[_nested_extension(5)])))
    st.settings = st.settings.with_(max_json_depth=200)
    assert fhir.post("Patient", patient(extension=[_nested_extension(60)])).status_code == 201


@pytest.mark.parametrize("url", ["Patient", "", "Patient/$match", "Observation/$lastn",
                                 "Patient/{pid}"])
@pytest.mark.parametrize("body", ["[" * 100_000, "[" * 1000 + "]" * 1000,
                                  '{"resourceType": "Patient", "name": ' + "[" * 900 + "]" * 900
                                  + "}"])
def test_json_nested_beyond_any_limit_is_400_json(fhir, url, body):
    pid = fhir.create(patient())["id"]
    method = fhir.put if url == "Patient/{pid}" else fhir.post
    outcome(method(url.format(pid=pid), body))
    assert total(fhir, "Patient") == 1


@pytest.mark.parametrize("body", ["[" * 100_000, '{"patient": ' + "[" * 5000 + "]" * 5000 + "}"])
def test_launch_with_json_nested_beyond_any_limit_is_400(client, body):
    r = client.post("/oauth/launch", data=body, content_type="application/json")
    assert r.status_code == 400, r.get_data(as_text=True)[:300]


def test_patch_that_nests_too_deep_is_400_http_patch(fhir):
    pid = fhir.create(patient(extension=[_nested_extension(20)]))["id"]
    path = "/extension/0" + "/extension/0" * 18
    ops = [{"op": "add", "path": path + "/extension/-", "value": _nested_extension(20)}]
    outcome(fhir.patch(f"Patient/{pid}", ops))
    assert fhir.get(f"Patient/{pid}").get_json()["meta"]["versionId"] == "1"


# -- 9. long strings in indexed elements (search.html#string, #token) ----------------------


def _search_post(fhir, rtype: str, **params: str):
    from urllib.parse import urlencode

    return fhir.client.post(f"/{rtype}/_search", data=urlencode(params),
                            content_type="application/x-www-form-urlencoded")


def test_a_long_name_is_stored_and_found_search_string(fhir):
    """A 1.5 MB family name (far under the body limit) is stored and searchable: its
    index values keep the first 200 characters, and no search misses it."""
    import time

    name = "Zhang" + "".join(chr(0x4E00 + i % 5000) for i in range(1_500_000))
    started = time.monotonic()
    pid = fhir.create(patient(family=name))["id"]
    assert time.monotonic() - started < 30
    other = fhir.create(patient(family="Zhang"))["id"]
    assert fhir.get(f"Patient/{pid}").get_json()["name"][0]["family"] == name
    assert _ids(fhir.get("Patient?family=zhang")) == {pid, other}
    assert _ids(_search_post(fhir, "Patient", family=name[:300])) == {pid}
    assert _ids(_search_post(fhir, "Patient", **{"family:exact": name})) == {pid}
    assert pid in _ids(_search_post(fhir, "Patient", **{"family:contains": name[900_000:900_050]}))
    assert _ids(_search_post(fhir, "Patient", **{"family:exact": name[:200]})) == set()
    assert _ids(fhir.get("Patient?_sort=family")) == {pid, other}


def test_names_near_the_cut_compare_exactly_search_string(fhir):
    long = "a" * 199 + "bc"
    pid = fhir.create(patient(family=long))["id"]
    short = fhir.create(patient(family=long[:200]))["id"]
    assert _ids(_search_post(fhir, "Patient", **{"family:exact": long[:200]})) == {short}
    assert _ids(_search_post(fhir, "Patient", **{"family:exact": long})) == {pid}
    assert _ids(_search_post(fhir, "Patient", family=long[:200])) == {pid, short}
    assert _ids(_search_post(fhir, "Patient", **{"family:contains": "bc"})) == {pid}


def test_a_long_identifier_is_stored_and_found_search_token(fhir):
    value = "X" * 1_000_000
    pid = fhir.create(patient(identifier=[{"system": "http://example.org/long",
                                           "value": value}]))["id"]
    found = _search_post(fhir, "Patient", identifier=f"http://example.org/long|{value}")
    assert _ids(found) == {pid}
    assert _ids(fhir.get("Patient?identifier=http://example.org/long|")) == {pid}


def test_a_resource_too_large_to_store_is_413_not_a_crash(fhir):
    """16 MiB is the database's limit on one stored document: a resource whose index
    values would pass it is refused with 413 before anything is written."""
    given = [f"{i:06d}" + "x" * 144 for i in range(60_000)]  # 9 MB of JSON
    r = fhir.post("Patient", patient(given="a") | {"name": [{"family": "F", "given": given}]})
    assert outcome(r, 413)["issue"][0]["code"] == "too-costly"
    r = fhir.post("Patient", {"resourceType": "Patient", "name": [{"given": ["a"] * 3_000_000}]})
    outcome(r, 413)
    r = fhir.post("", tx(post(patient()), post(patient(family="F") | {
        "name": [{"family": "F", "given": given}]})))
    outcome(r, 413)
    assert total(fhir, "Patient") == 0


# -- AuditEvent search follows the search rules of every type (search.html#errors) ---------


def test_audit_unknown_parameter_is_ignored_and_reported_or_refused_search_errors(fhir):
    pid = fhir.create(patient())["id"]
    r = fhir.get("AuditEvent?_id:missing=ap1e308&patient=" + pid)
    assert r.status_code == 200
    notes = [e["resource"] for e in r.get_json()["entry"] if e["search"]["mode"] == "outcome"]
    assert notes and "_id:missing" in expressions(notes[0])
    assert all(e["resource"]["resourceType"] == "AuditEvent"
               for e in r.get_json()["entry"] if e["search"]["mode"] == "match")
    r = fhir.get("AuditEvent?_id:missing=ap1e308", headers={"Prefer": "handling=strict"})
    assert "_id:missing" in expressions(outcome(r))


@pytest.mark.parametrize("query", ["patient=Patient/a/b", "patient=", "patient=a&patient=b",
                                   "_cursor=x", "_count=-1"])
def test_audit_malformed_value_is_400_search_errors(fhir, query):
    name = query.partition("=")[0]
    assert name in expressions(outcome(fhir.get(f"AuditEvent?{query}")))


def test_audit_log_whole_is_paged_by_record_number_not_scanned_search_errors(app, fhir):
    """The operator's whole log, newest first, is read page by page by record number
    (search.html#paging), whatever the log's size: no scan, so nothing to refuse even
    past FHIR_SCAN_LIMIT; every record once, in order."""
    pid = fhir.create(patient())["id"]
    for _ in range(4):
        fhir.get(f"Patient/{pid}")
    st = app.extensions["fhirserver"]
    st.settings = st.settings.with_(scan_limit=1)
    seen: list[int] = []
    url = "AuditEvent?_count=3"
    while url:
        r = fhir.get(url)
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        seen += [int(e["resource"]["id"].removeprefix("audit-")) for e in body["entry"]]
        url = next((ln["url"].split("/fhir/", 1)[1] for ln in body["link"]
                    if ln["relation"] == "next"), None)
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) >= 6
    assert seen[-1] == 1
    r = fhir.get(f"AuditEvent?patient=Patient/{pid}")
    assert r.status_code == 200 and r.get_json()["entry"]


# -- characters a FHIR string may not hold (json.html: none below U+0020 but tab, CR, LF) ---


@pytest.mark.parametrize("text", ["a\u0000b", "a\u0001b", "a\u001fb"])
def test_control_characters_in_a_string_are_400_naming_it_json(fhir, text):
    r = fhir.post("Patient", patient(family=text))
    assert "Patient.name[0].family" in expressions(outcome(r))
    r = fhir.post("", tx(post(patient(family=text))))
    assert "Bundle.entry[0].resource.name[0].family" in expressions(outcome(r))
    assert total(fhir, "Patient") == 0
    assert fhir.post("Patient", patient(family="tab\tand\r\nlines")).status_code == 201


def test_nul_in_a_bundle_request_is_400_naming_it_json(fhir):
    r = fhir.post("", tx({"request": {"method": "GET", "url": "Patient?name=a\u0000"}},
                         kind="batch"))
    assert "Bundle.entry[0].request.url" in expressions(outcome(r))


@pytest.mark.parametrize("url", ["Patient?name=a%00b", "Patient/a%00b", "Patient?a%00b=1",
                                 "Patient/%00/_history", "Observation/%00/$lastn"])
def test_nul_in_the_url_is_400_and_still_audited_http_summary(fhir, url):
    outcome(fhir.get(url))
    outcome(fhir.put("Patient/a%00", patient()))
    assert total(fhir, "Patient") == 0


def test_patch_entry_with_binary_data_of_the_wrong_type_is_400_http_patch(fhir):
    pid = fhir.create(patient())["id"]
    entry = {"request": {"method": "PATCH", "url": f"Patient/{pid}"},
             "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                          "data": 5}}
    outcome(fhir.post("", tx(entry)))
    assert fhir.get(f"Patient/{pid}").get_json()["meta"]["versionId"] == "1"
