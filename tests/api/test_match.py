"""Patient/$match over HTTP (R4 patient-operation-match.html): realistic
near-duplicates ranked best first, with search.score and the match-grade extension."""

from __future__ import annotations

from tests.mpi.numbers import gb11643

RID = "https://fhirserver.example/sid/resident-id"
GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
ZHANG = gb11643("110105", "19850615", "013")  # male


def zhang(**extra: object) -> dict:
    return {"resourceType": "Patient", "name": [{"family": "Zhang", "given": ["Wei"]}],
            "gender": "male", "birthDate": "1985-06-15",
            "telecom": [{"system": "phone", "value": "13800138000"}], **extra}


def ask(fhir, patient: dict, **params: object):
    parameter = [{"name": "resource", "resource": patient}]
    if "only_certain" in params:
        parameter.append({"name": "onlyCertainMatches", "valueBoolean": params["only_certain"]})
    if "count" in params:
        parameter.append({"name": "count", "valueInteger": params["count"]})
    return fhir.post("Patient/$match", {"resourceType": "Parameters", "parameter": parameter})


def graded(bundle: dict) -> list[tuple[str, str, float]]:
    return [(e["resource"]["id"], e["search"]["extension"][0]["valueCode"], e["search"]["score"])
            for e in bundle.get("entry", [])]


def _population(fhir) -> dict[str, str]:
    ids = {
        "zhang": fhir.create(zhang(identifier=[{"system": RID, "value": ZHANG}]))["id"],
        "other_zhang": fhir.create({"resourceType": "Patient", "gender": "female",
                                    "name": [{"family": "Zhang", "given": ["Wei"]}],
                                    "birthDate": "1992-03-08"})["id"],
        "li": fhir.create({"resourceType": "Patient", "gender": "female",
                           "name": [{"family": "Li", "given": ["Na"]}], "birthDate": "1985-06-15"})["id"],
    }
    return ids


def test_same_resident_id_is_a_certain_match(fhir):
    ids = _population(fhir)
    r = ask(fhir, {"resourceType": "Patient", "identifier": [{"system": RID, "value": ZHANG.lower()}]})
    assert r.status_code == 200
    top = graded(r.get_json())[0]
    assert top[:2] == (ids["zhang"], "certain") and top[2] == 1.0


def test_name_variant_and_phone_format_rank_the_duplicate_first(fhir):
    ids = _population(fhir)
    query = {"resourceType": "Patient", "name": [{"family": "ZHANG", "given": ["Wie"]}],
             "gender": "male", "birthDate": "1985-06-15",
             "telecom": [{"system": "phone", "value": "+86 138-0013-8000"}]}
    result = graded(ask(fhir, query).get_json())
    assert result[0][0] == ids["zhang"] and result[0][1] in ("probable", "possible")
    scores = [s for _, _, s in result]
    assert scores == sorted(scores, reverse=True)
    assert ids["other_zhang"] not in [i for i, g, _ in result if g in ("probable", "certain")]


def test_transposed_digits_in_the_resident_id_is_probable_not_certain(fhir):
    ids = _population(fhir)
    typo = ZHANG[:8] + ZHANG[9] + ZHANG[8] + ZHANG[10:]  # 1985 -> 1958 keyed wrong
    query = zhang(identifier=[{"system": RID, "value": typo}])
    result = graded(ask(fhir, query).get_json())
    assert result[0][0] == ids["zhang"] and result[0][1] == "probable"


def test_only_certain_and_count(fhir):
    ids = _population(fhir)
    query = zhang(identifier=[{"system": RID, "value": ZHANG}])
    assert [i for i, _, _ in graded(ask(fhir, query, only_certain=True).get_json())] == [ids["zhang"]]
    no_id = {"resourceType": "Patient", "name": [{"family": "Zhang", "given": ["Wei"]}],
             "birthDate": "1985-06-15", "gender": "male"}
    assert graded(ask(fhir, no_id, only_certain=True).get_json()) == []
    assert len(graded(ask(fhir, no_id, count=1).get_json())) <= 1


def test_bad_input_is_400(fhir):
    assert fhir.post("Patient/$match", {"resourceType": "Parameters"}).status_code == 400
    r = fhir.post("Patient/$match", {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Observation", "status": "final",
                                          "code": {"text": "x"}}}]})
    assert r.status_code == 400
    r = ask(fhir, {"resourceType": "Patient"}, count=0)
    assert r.status_code == 400
