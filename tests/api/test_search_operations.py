"""Patient/$everything (R4 patient-operation-everything.html) and Observation/$lastn
(R4 observation-operation-lastn.html)."""

from __future__ import annotations

from tests import factories as f

from .test_search import follow, get, ids, obs_at


def _patient_with_records(fhir) -> tuple[str, list[str], str]:
    p = fhir.create(f.patient())["id"]
    obs = [fhir.create(obs_at(p, f"2024-0{m}-15"))["id"] for m in range(1, 6)]
    dr = fhir.create({"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": f"Patient/{p}"},
                      "effectiveDateTime": "2024-03-01"})["id"]
    other = fhir.create(f.patient("Other"))["id"]
    fhir.create(obs_at(other, "2024-01-01"))
    return p, obs, dr


def test_everything_returns_the_patient_and_their_compartment_paged(fhir):
    """Patient first, then every Observation and DiagnosticReport whose subject is the
    patient, and nobody else's; _count pages through all of it."""
    p, obs, dr = _patient_with_records(fhir)
    first = get(fhir, f"Patient/{p}/$everything?_count=3")
    assert first["type"] == "searchset" and "total" not in first  # counting would read all
    pages = [first]
    while (nxt := follow(fhir, pages[-1], "next")) is not None:
        pages.append(nxt)
    got = [(e["resource"]["resourceType"], e["resource"]["id"]) for b in pages for e in b["entry"]]
    assert got[0] == ("Patient", p)
    assert sorted(got[1:]) == sorted([("Observation", o) for o in obs] + [("DiagnosticReport", dr)])
    assert [len(b["entry"]) for b in pages] == [3, 3, 1]


def test_everything_start_end_type_and_since(fhir):
    """start/end select by care date (the patient itself always comes back); _type
    limits the types; _since keeps what changed since an instant."""
    p, obs, dr = _patient_with_records(fhir)
    b = get(fhir, f"Patient/{p}/$everything?start=2024-02-01&end=2024-03-31")
    assert sorted(ids(b)) == sorted([p, obs[1], obs[2], dr])
    b = get(fhir, f"Patient/{p}/$everything?_type=DiagnosticReport")
    assert ids(b) == [dr]
    marker = fhir.get(f"Observation/{obs[0]}").get_json()["meta"]["lastUpdated"]
    fhir.put(f"Observation/{obs[0]}", {**obs_at(p, "2024-01-15", value=7.0), "id": obs[0]})
    b = get(fhir, f"Patient/{p}/$everything?_since={marker}&_type=Observation")
    assert obs[0] in ids(b)
    assert fhir.get(f"Patient/{p}/$everything?start=yesterday").status_code == 400
    assert fhir.get(f"Patient/{p}/$everything?_type=Encounter").status_code == 400


def test_everything_by_post_and_on_missing_or_deleted_patient(fhir):
    p, obs, dr = _patient_with_records(fhir)
    r = fhir.post(f"Patient/{p}/$everything",
                  {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Patient"}]})
    assert r.status_code == 200 and ids(r.get_json()) == [p]
    assert fhir.get("Patient/nobody/$everything").status_code == 404
    gone = fhir.create(f.patient("Gone"))["id"]
    fhir.delete(f"Patient/{gone}")
    assert fhir.get(f"Patient/{gone}/$everything").status_code == 410
    assert fhir.get(f"Observation/{obs[0]}/$everything").status_code == 404


def test_lastn_groups_by_code_most_recent_first(fhir):
    """$lastn: per patient and code, the ``max`` most recent (default 1), newest first."""
    p = fhir.create(f.patient())["id"]
    q = fhir.create(f.patient("Q"))["id"]
    glucose = [fhir.create(obs_at(p, f"2024-01-0{d}", code="15074-8"))["id"] for d in range(1, 5)]
    bp = [fhir.create(obs_at(p, f"2024-02-0{d}", code="8480-6"))["id"] for d in range(1, 3)]
    other = fhir.create(obs_at(q, "2024-03-01", code="15074-8"))["id"]

    b = get(fhir, f"Observation/$lastn?patient={p}")
    assert sorted(ids(b)) == sorted([glucose[3], bp[1]])
    b = get(fhir, f"Observation/$lastn?patient={p}&max=2")
    got = ids(b)
    assert sorted(got) == sorted([glucose[3], glucose[2], bp[1], bp[0]])
    # Within a group the newest comes first, and a group's entries are adjacent.
    assert got.index(glucose[3]) + 1 == got.index(glucose[2])
    assert got.index(bp[1]) + 1 == got.index(bp[0])
    b = get(fhir, f"Observation/$lastn?patient={p}&code=8480-6&max=5")
    assert ids(b) == [bp[1], bp[0]]
    b = get(fhir, "Observation/$lastn?code=15074-8&date=ge2024-01-03")
    assert sorted(ids(b)) == sorted([glucose[3], other])
    assert fhir.get("Observation/$lastn?max=0").status_code == 400
    assert fhir.get("Observation/$lastn?max=two").status_code == 400
    assert fhir.get("Patient/$lastn").status_code == 404


def test_lastn_groups_codes_as_written_system_pipes_and_text_only(fhir):
    """$lastn groups "by code" (observation-operation-lastn.html): the same codings in
    any order are one group; a code holding a ``|`` is not split at it; a code given
    only as text groups by the whole text, however long."""
    p = fhir.create(f.patient())["id"]

    def coded(when: str, *codings: tuple[str, str]) -> str:
        body = {**obs_at(p, when), "code": {"coding": [{"system": s, "code": c}
                                                         for s, c in codings]}}
        return fhir.create(body)["id"]

    def text_only(when: str, text: str) -> str:
        return fhir.create({**obs_at(p, when), "code": {"text": text}})["id"]

    both_old = coded("2024-01-01", ("http://loinc.org", "1-8"), ("urn:local", "a"))
    both_new = coded("2024-01-02", ("urn:local", "a"), ("http://loinc.org", "1-8"))
    loinc_only = coded("2024-01-03", ("http://loinc.org", "1-8"))
    piped_1 = coded("2024-01-04", ("urn:x", "a|b"))
    piped_2 = coded("2024-01-05", ("urn:x|a", "b"))
    head = "x" * 250
    long_1 = text_only("2024-01-06", head + " one")
    long_2 = text_only("2024-01-07", head + " two")
    long_1_again = text_only("2024-01-08", head + " one")

    got = ids(get(fhir, f"Observation/$lastn?patient={p}"))
    assert sorted(got) == sorted([both_new, loinc_only, piped_1, piped_2, long_2, long_1_again])
    assert both_old not in got and long_1 not in got
    got = ids(get(fhir, f"Observation/$lastn?patient={p}&max=2"))
    assert got.index(both_new) + 1 == got.index(both_old)
    assert got.index(long_1_again) + 1 == got.index(long_1)


def test_lastn_tells_long_codes_apart_beyond_the_index_length(fhir):
    """observation-operation-lastn.html groups "by code": two codes that share their
    first few hundred characters are still two codes (the search index keeps only
    the first ones of a long value)."""
    p = fhir.create(f.patient())["id"]
    head = "c" * 250

    def coded(when: str, code: str) -> str:
        body = {**obs_at(p, when), "code": {"coding": [{"system": "urn:x", "code": code}]}}
        return fhir.create(body)["id"]

    one = coded("2024-01-01", head + "1")
    two = coded("2024-01-02", head + "2")
    one_again = coded("2024-01-03", head + "1")
    got = ids(get(fhir, f"Observation/$lastn?patient={p}"))
    assert sorted(got) == sorted([two, one_again]) and one not in got


def test_lastn_without_parameters_and_after_a_deletion(fhir):
    """observation-operation-lastn.html: with no other parameter every subject's
    latest per code is returned; a deleted Observation is not (http.html#delete),
    and the one before it takes its place."""
    p = fhir.create(f.patient())["id"]
    older = fhir.create(obs_at(p, "2024-01-01"))["id"]
    newer = fhir.create(obs_at(p, "2024-01-02"))["id"]
    assert newer in ids(get(fhir, "Observation/$lastn"))
    assert fhir.delete(f"Observation/{newer}").status_code in (200, 204)
    got = ids(get(fhir, "Observation/$lastn"))
    assert older in got and newer not in got
