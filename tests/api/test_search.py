"""Search over HTTP (R4 search.html, http.html#search): paging, sorting, chaining,
_has, _include/_revinclude, compartments, POST _search and the result parameters.
Small hand-made data; tests/api/test_search_synthea.py checks real volumes.

On the embedded database every statement these searches send is checked afterwards:
one that only a sequential scan answers fails the test (tests/seq_scans.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests import factories as f
from tests.seq_scans import no_seq_scans


@pytest.fixture(autouse=True)
def answered_from_indexes(database_server, db_name, fhir):  # type: ignore[no-untyped-def]
    """Requests only: the app (and its start-up work) exists before the check starts."""
    pg_url = database_server[1]
    if not pg_url:
        yield
        return
    with no_seq_scans(pg_url, db_name) as scans:
        yield
    assert not scans, "statements no index answers:\n\n" + "\n\n".join(scans)

LOINC = "http://loinc.org"


def ids(bundle: dict, mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def refs(bundle: dict, mode: str = "match") -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", []) if e["search"]["mode"] == mode}


def follow(fhir, bundle: dict, relation: str) -> dict | None:
    for link in bundle.get("link", []):
        if link["relation"] == relation:
            parts = urlsplit(link["url"])
            path = parts.path.removeprefix("/fhir")
            r = fhir.get(f"{path}?{parts.query}")
            assert r.status_code == 200, r.get_json()
            return r.get_json()
    return None


def get(fhir, url: str, status: int = 200) -> dict:
    r = fhir.get(url)
    assert r.status_code == status, r.get_json()
    return r.get_json()


def obs_at(pid: str, when: str, code: str = "15074-8", value: float = 6.3) -> dict:
    return f.observation(pid, code=code, value=value, effectiveDateTime=when)


# -- paging and sorting --------------------------------------------------------------


def test_sorted_pages_stay_correct_while_others_write_search_sort_http_paging(fhir):
    """http.html#paging + search.html#sort: following next links over ``_sort=-date``
    yields every resource exactly once, in order, even when resources are created
    between pages; previous links give back the same pages."""
    p = fhir.create(f.patient())["id"]
    for day in range(1, 8):
        fhir.create(obs_at(p, f"2024-01-{day:02d}"))
    first = get(fhir, "Observation?_sort=-date&_count=3&_total=accurate")
    assert first["total"] == 7
    fhir.create(obs_at(p, "2024-02-01"))  # sorts first: must not shift the later pages
    fhir.create(obs_at(p, "2023-12-31"))  # sorts last: must appear at the end
    pages, bundle = [first], first
    while (bundle := follow(fhir, bundle, "next")) is not None:
        pages.append(bundle)
    dates = [e["resource"]["effectiveDateTime"] for b in pages for e in b.get("entry", [])]
    assert dates == [f"2024-01-{d:02d}" for d in range(7, 0, -1)] + ["2023-12-31"]
    assert len(pages) == 3
    back = follow(fhir, pages[2], "previous")
    assert ids(back) == ids(pages[1])
    back = follow(fhir, back, "previous")
    assert ids(back) == ids(first)
    # The resource created before the first page's rows is now reachable backwards.
    newest = follow(fhir, back, "previous")
    assert [e["resource"]["effectiveDateTime"] for e in newest["entry"]] == ["2024-02-01"]
    assert follow(fhir, newest, "previous") is None


def test_sort_on_repeating_values_uses_lowest_then_highest_search_sort(fhir):
    """search.html#sort: ascending compares a resource's lowest value, descending its
    highest (given names: A..Z and M..N)."""
    a = fhir.create({"resourceType": "Patient", "name": [{"given": ["Zed", "Anna"]}]})["id"]
    b = fhir.create({"resourceType": "Patient", "name": [{"given": ["Bob"]}]})["id"]
    c = fhir.create({"resourceType": "Patient", "name": [{"given": ["Mia"]}]})["id"]
    fhir.create({"resourceType": "Patient", "gender": "male"})  # no given: sorted first
    asc = ids(get(fhir, "Patient?given:missing=false&_sort=given"))
    assert asc == [a, b, c]
    desc = ids(get(fhir, "Patient?given:missing=false&_sort=-given"))
    assert desc == [a, c, b]


def test_paging_crosses_resources_without_the_sort_value_search_sort(fhir):
    """Resources lacking the sorted element still appear exactly once: first ascending,
    last descending (MongoDB orders missing below every value), one per page."""
    named = [fhir.create(f.patient(given=g))["id"] for g in ("Bea", "Al", "Cy")]
    bare = sorted(fhir.create({"resourceType": "Patient", "gender": "other"})["id"] for _ in range(2))

    def walk(url: str) -> list[str]:
        out, bundle = [], get(fhir, url)
        while bundle is not None:
            out += ids(bundle)
            bundle = follow(fhir, bundle, "next")
        return out

    assert walk("Patient?_sort=given&_count=1") == [*bare, named[1], named[0], named[2]]
    assert walk("Patient?_sort=-given&_count=1") == [named[2], named[0], named[1], *bare]
    assert walk("Patient?_sort=-given&_count=2") == [named[2], named[0], named[1], *bare]


def test_sort_on_several_parameters_search_sort(fhir):
    p = fhir.create(f.patient())["id"]
    o1 = fhir.create(obs_at(p, "2024-01-01", code="1-1"))["id"]
    o2 = fhir.create(obs_at(p, "2024-01-02", code="1-1"))["id"]
    o3 = fhir.create(obs_at(p, "2024-01-03", code="0-0"))["id"]
    assert ids(get(fhir, "Observation?_sort=code,-date")) == [o3, o2, o1]
    assert ids(get(fhir, "Observation?_sort=-code,date")) == [o1, o2, o3]
    assert ids(get(fhir, "Observation?_sort=_lastUpdated")) == [o1, o2, o3]
    assert ids(get(fhir, "Observation?_sort=-_lastUpdated")) == [o3, o2, o1]


def test_broken_cursor_is_400_http_paging(fhir):
    r = fhir.get("Observation?_cursor=not-a-cursor")
    assert r.status_code == 400
    assert r.get_json()["issue"][0]["expression"] == ["_cursor"]


# -- chaining and _has ---------------------------------------------------------------


def _two_patients(fhir) -> tuple[str, str]:
    peter = fhir.create(f.patient("Chalmers", "Peter", birthDate="1974-12-25", gender="male",
                                  identifier=[{"system": "urn:oid:1.2.36", "value": "12345"}]))["id"]
    anna = fhir.create(f.patient("Smith", "Anna", birthDate="1990-06-01", gender="female"))["id"]
    return peter, anna


def test_chained_parameters_search_chaining(fhir):
    """search.html#chaining: subject.name, subject:Patient.identifier, patient.birthdate."""
    peter, anna = _two_patients(fhir)
    op = fhir.create(f.observation(peter))["id"]
    oa = fhir.create(f.observation(anna))["id"]
    assert ids(get(fhir, "Observation?subject.name=peter")) == [op]
    assert ids(get(fhir, "Observation?subject:Patient.identifier=urn:oid:1.2.36|12345")) == [op]
    assert ids(get(fhir, "Observation?patient.birthdate=ge1980")) == [oa]
    assert sorted(ids(get(fhir, "Observation?patient.gender=male,female"))) == sorted([op, oa])
    assert ids(get(fhir, "Observation?subject.name=nobody")) == []
    # Two chains on one search are ANDed (search.html#combining).
    assert ids(get(fhir, "Observation?subject.name=anna&patient.gender=male")) == []


def test_chain_through_two_references_search_chaining(fhir):
    """DiagnosticReport.result -> Observation.patient -> Patient.name."""
    peter, anna = _two_patients(fhir)
    op = fhir.create(f.observation(peter))["id"]
    oa = fhir.create(f.observation(anna))["id"]
    dr = fhir.create({"resourceType": "DiagnosticReport", "status": "final",
                      "code": {"text": "panel"}, "result": [{"reference": f"Observation/{op}"}]})
    fhir.create({"resourceType": "DiagnosticReport", "status": "final",
                 "code": {"text": "panel"}, "result": [{"reference": f"Observation/{oa}"}]})
    assert ids(get(fhir, "DiagnosticReport?result.patient.family=chalmers")) == [dr["id"]]


def test_reverse_chaining_search_has(fhir):
    """search.html#has: patients with an Observation of a code; nested _has."""
    peter, anna = _two_patients(fhir)
    glucose = fhir.create(f.observation(peter, code="15074-8"))["id"]
    fhir.create(f.observation(anna, code="8480-6"))
    assert ids(get(fhir, "Patient?_has:Observation:patient:code=15074-8")) == [peter]
    assert ids(get(fhir, f"Patient?_has:Observation:patient:code={LOINC}|8480-6")) == [anna]
    assert ids(get(fhir, "Patient?_has:Observation:patient:code=0000-0")) == []
    fhir.create({"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"},
                 "result": [{"reference": f"Observation/{glucose}"}]})
    nested = "Patient?_has:Observation:patient:_has:DiagnosticReport:result:status=final"
    assert ids(get(fhir, nested)) == [peter]


def test_unknown_link_in_a_chain_is_ignored_and_reported_search_errors(fhir):
    peter, _ = _two_patients(fhir)
    fhir.create(f.observation(peter))
    bundle = get(fhir, "Observation?subject.nonsense=1")
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "subject.nonsense" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert "subject.nonsense" not in bundle["link"][0]["url"]
    r = fhir.get("Observation?subject.nonsense=1", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400


# -- _include and _revinclude --------------------------------------------------------


def _report(fhir) -> tuple[str, list[str], str]:
    p = fhir.create(f.patient())["id"]
    o1 = fhir.create(f.observation(p, code="1-1"))["id"]
    o2 = fhir.create(f.observation(p, code="2-2", derivedFrom=[{"reference": f"Observation/{o1}"}]))["id"]
    dr = fhir.create({"resourceType": "DiagnosticReport", "status": "final",
                      "code": {"text": "panel"}, "subject": {"reference": f"Patient/{p}"},
                      "result": [{"reference": f"Observation/{o2}"}]})["id"]
    return p, [o1, o2], dr


def test_include_and_iterate_search_include(fhir):
    """search.html#include: DiagnosticReport:result adds the results (mode include);
    :iterate follows Observation:derived-from from the included ones too."""
    p, (o1, o2), dr = _report(fhir)
    b = get(fhir, "DiagnosticReport?_include=DiagnosticReport:result")
    assert ids(b) == [dr] and refs(b, "include") == {f"Observation/{o2}"}
    b = get(fhir, "DiagnosticReport?_include=DiagnosticReport:result"
                  "&_include:iterate=Observation:derived-from")
    assert refs(b, "include") == {f"Observation/{o2}", f"Observation/{o1}"}
    b = get(fhir, "DiagnosticReport?_include=*")
    assert refs(b, "include") == {f"Observation/{o2}", f"Patient/{p}"}
    b = get(fhir, "DiagnosticReport?_include=DiagnosticReport:subject:Patient")
    assert refs(b, "include") == {f"Patient/{p}"}
    # include entries carry absolute fullUrls like matches (bundle.html#searchset).
    entry = [e for e in b["entry"] if e["search"]["mode"] == "include"][0]
    assert entry["fullUrl"] == f"http://fhir.test/fhir/Patient/{p}"


def test_revinclude_search_revinclude(fhir):
    p, (o1, o2), dr = _report(fhir)
    b = get(fhir, f"Patient?_id={p}&_revinclude=Observation:patient")
    assert ids(b) == [p]
    assert refs(b, "include") == {f"Observation/{o1}", f"Observation/{o2}"}
    b = get(fhir, f"Patient?_id={p}&_revinclude=*")
    assert refs(b, "include") == {f"Observation/{o1}", f"Observation/{o2}", f"DiagnosticReport/{dr}"}
    b = get(fhir, f"Observation?_id={o2}&_revinclude=DiagnosticReport:result"
                  "&_include:iterate=DiagnosticReport:subject")
    assert refs(b, "include") == {f"DiagnosticReport/{dr}", f"Patient/{p}"}


def test_deleted_resources_are_not_included_search_include(fhir):
    p, (o1, o2), dr = _report(fhir)
    fhir.delete(f"DiagnosticReport/{dr}")
    b = get(fhir, f"Patient?_id={p}&_revinclude=DiagnosticReport:subject")
    assert refs(b, "include") == set()


def test_bad_include_is_400_search_include(fhir):
    r = fhir.get("Observation?_include=Observation:code")
    assert r.status_code == 400
    assert "not a reference" in r.get_json()["issue"][0]["diagnostics"]


# -- compartments, POST, result parameters --------------------------------------------


def test_compartment_search_http_search_compartment(fhir):
    """http.html#search: GET Patient/{id}/Observation?code=... searches one patient's."""
    peter, anna = _two_patients(fhir)
    mine = fhir.create(f.observation(peter, code="1-1"))["id"]
    fhir.create(f.observation(peter, code="2-2"))
    fhir.create(f.observation(anna, code="1-1"))
    b = get(fhir, f"Patient/{peter}/Observation?code=1-1")
    assert ids(b) == [mine] and b["total"] == 1
    assert b["link"][0]["url"] == f"http://fhir.test/fhir/Patient/{peter}/Observation?code=1-1"
    assert get(fhir, f"Patient/{anna}/DiagnosticReport")["total"] == 0
    assert fhir.get(f"Patient/{peter}/Encounter").status_code == 404
    assert fhir.get(f"Patient/{peter}/Nonsense").status_code == 404
    assert fhir.get(f"Observation/{mine}/Patient").status_code == 404
    # _history keeps its meaning under the same URL shape.
    assert get(fhir, f"Patient/{peter}/_history")["type"] == "history"


def test_post_search_equals_get_http_search(fhir):
    peter, anna = _two_patients(fhir)
    fhir.create(f.observation(peter))
    query = "subject.name=peter&_include=Observation:patient&_sort=-_lastUpdated"
    by_get = get(fhir, f"Observation?{query}")
    r = fhir.post("Observation/_search", query, content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200
    by_post = r.get_json()
    assert [e["fullUrl"] for e in by_post["entry"]] == [e["fullUrl"] for e in by_get["entry"]]
    assert by_post["total"] == by_get["total"] == 1


def test_total_summary_and_elements_search_total_summary_elements(fhir):
    peter, anna = _two_patients(fhir)
    assert "total" not in get(fhir, "Patient?_total=none")
    assert get(fhir, "Patient?_total=accurate")["total"] == 2
    assert get(fhir, "Patient?_total=estimate")["total"] == 2
    counted = get(fhir, "Patient?_summary=count")
    assert counted["total"] == 2 and "entry" not in counted
    b = get(fhir, f"Patient?_id={peter}&_elements=gender")
    res = b["entry"][0]["resource"]
    assert res["gender"] == "male" and "name" not in res
    assert res["meta"]["tag"][-1]["code"] == "SUBSETTED"


def test_metadata_lists_includes_and_operations(fhir):
    cs = get(fhir, "metadata")
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert "DiagnosticReport:result" in by_type["DiagnosticReport"]["searchInclude"]
    assert "Observation:patient" in by_type["Patient"]["searchRevInclude"]
    assert {"everything", "ihe-pix"} <= {o["name"] for o in by_type["Patient"]["operation"]}
    assert [o["name"] for o in by_type["Observation"]["operation"]] == ["lastn"]
    assert "operation" not in by_type["DiagnosticReport"]


def test_a_leap_second_is_found_in_its_minute_day_and_year_search_date(fhir):
    """datatypes.html#dateTime allows a leap second (``23:59:60``), so the record is
    stored; search.html#date must then find it like any other time of its day: it is
    read as the last second of its minute, for the stored value and for a search value
    that names it. (A date without a zone is a day of the server's zone, Asia/Shanghai
    by default: this UTC leap second falls on its 1 January.)"""
    pid = fhir.create(f.patient("Leap"))["id"]
    oid = fhir.create({**f.observation(pid), "effectiveDateTime": "2016-12-31T23:59:60Z"})["id"]
    after = fhir.create({**f.observation(pid), "effectiveDateTime": "2017-01-01T00:00:00Z"})["id"]

    def found(value: str) -> set[str]:
        r = fhir.get(f"Observation?patient={pid}&date={value}")
        assert r.status_code == 200, r.get_json()
        return set(ids(r.get_json()))

    for value in ("2017-01-01", "2017", "2017-01", "gt2000", "lt2100", "2016-12-31T23:59:60Z",
                  "ge2016-12-31T23:59:59Z", "lt2017-01-01T00:00:00Z"):
        assert oid in found(value), value
    assert found("lt2017-01-01T00:00:00Z") == {oid}
    assert found("ge2017-01-01T00:00:00Z") == {after}
    assert fhir.get("Observation?date=2016-12-31T23:59:61Z").status_code == 400
