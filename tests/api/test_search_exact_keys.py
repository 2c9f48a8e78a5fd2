"""Exact-match parameters (search.html#token, search.html#reference, search.html#uri)
are answered from the index keys ``k`` alone: the one-time pass ``serve`` runs before
its workers start, and the ``_has`` join, must keep every answer."""

from __future__ import annotations

from urllib.parse import quote
from zoneinfo import ZoneInfo

from tests import factories as f
from tests.conftest import FhirClient, make_app


def _url(query: str) -> str:
    """``query`` with each name and value percent-encoded (``+``, ``\\``...)."""
    path, _, items = query.partition("?")
    pairs = [item.partition("=") for item in items.split("&")] if items else []
    return path + "?" + "&".join(f"{quote(k, safe=':.')}={quote(v, safe='|:/,')}"
                                 for k, _, v in pairs)


def _ids(fhir: FhirClient, query: str) -> list[str]:
    resp = fhir.get(_url(query))
    assert resp.status_code == 200, resp.get_json()
    return sorted(e["resource"]["id"] for e in resp.get_json().get("entry", [])
                  if e.get("search", {}).get("mode", "match") == "match")


def test_token_search_survives_serve_on_a_database_from_before_index_keys(settings) -> None:  # type: ignore[no-untyped-def]
    """search.html#token: records an older version stored without ``k`` (their ``sp``
    holding every value) are still found by code and subject after ``serve`` starts:
    its one-time removal of the copies in ``sp`` runs in the master before any worker
    has computed the records' keys, so it must compute them first."""
    from fhirserver.cli import _recover
    from fhirserver.search.extract import extract

    app = make_app(settings)
    fhir = FhirClient(app.test_client())
    pid = fhir.create(f.patient())["id"]
    observation = fhir.create(f.observation(pid, effectiveDateTime="2024-03-01"))
    db = app.extensions["fhirserver"].repo.db
    legacy_sp = extract(observation, ZoneInfo(settings.timezone))
    db["Observation"].update_many({}, {"$unset": {"k": "", "b": ""}, "$set": {"sp": legacy_sp}})
    db["_months"].delete_many({})
    db["_schema"].delete_many({"_id": {"$in": ["search-keys", "search-values"]}})
    app.extensions["fhirserver"].repo.close()

    _recover(settings)  # what ``fhirserver serve`` does before its workers start

    again = FhirClient(make_app(settings).test_client())
    for query in ("Observation?code=15074-8", f"Observation?subject=Patient/{pid}",
                  f"Observation?patient={pid}&_sort=-date"):
        assert _ids(again, query) == [observation["id"]], query


def test_has_returns_patients_whose_sources_hold_many_other_keys(fhir) -> None:  # type: ignore[no-untyped-def]
    """search.html#has: the join collects the values of the named reference only,
    whatever other keys (identifiers, encounters) the matching sources carry."""
    pids = [fhir.create(f.patient())["id"] for _ in range(3)]
    for n, pid in enumerate(pids):
        for m in range(3):
            obs = f.observation(pid, effectiveDateTime="2024-03-01")
            obs["identifier"] = [{"system": "urn:x", "value": f"o-{n}-{m}"}]
            fhir.create(obs)
    assert _ids(fhir, "Patient?_has:Observation:patient:code=15074-8") == sorted(pids)
    assert _ids(fhir, "Patient?_has:Observation:patient:identifier=urn:x|o-1-2") == [pids[1]]
    assert _ids(fhir, "Patient?_has:Observation:subject:identifier=urn:x|o-2-0") == [pids[2]]


def test_token_reference_and_uri_forms_on_their_keys(fhir) -> None:  # type: ignore[no-untyped-def]
    """search.html#token (code, system|code, |code, system|, :not, :missing, :text,
    :of-type, escaped ``\\|``, ``=`` and regular-expression characters, values past
    the indexed length), search.html#reference (Type/id, bare id of any type,
    :Type, :identifier, :missing) and search.html#uri (:below, :above), each
    answered from ``k`` as they were from ``sp``."""
    long_code = "L" * 250
    mr = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
    p1 = fhir.create(f.patient(
        identifier=[{"system": "urn:a.b", "value": "x|y=z(1)+", "type": mr}],
        gender="female", meta={"profile": ["http://acme.org/fhir/StructureDefinition/p"]}))["id"]
    p2 = fhir.create(f.patient(identifier=[{"value": "no-system"}]))["id"]
    o1 = fhir.create(f.observation(p1, focus=[{"reference": f"Patient/{p2}"}],
                                   code="A", category=[{"text": "Vital Signs"}]))["id"]
    o2 = fhir.create({**f.observation(p2), "code": {
        "coding": [{"system": "http://loinc.org", "code": long_code}], "text": "Glucose"},
        "subject": {"identifier": {"system": "urn:mrn", "value": "7"}}})["id"]
    o3 = fhir.create({**f.observation(None), "code": {"coding": [{"code": "A"}]}})["id"]
    cases = {
        "Observation?code=A": [o1, o3],
        "Observation?code=http://loinc.org|A": [o1],
        "Observation?code=|A": [o3],
        "Observation?code=http://loinc.org|": [o1, o2],
        "Observation?code:not=A": [o2],
        "Observation?code:text=gluc": [o2],
        "Observation?category:text=vital": [o1],
        f"Observation?code=http://loinc.org|{long_code}": [o2],
        f"Observation?code={long_code}X": [o2],  # cut alike: more matches, never fewer
        "Observation?subject:missing=true": [o2, o3],
        "Observation?subject:missing=false": [o1],
        "Observation?subject:identifier=urn:mrn|7": [o2],
        f"Observation?subject=Patient/{p1}": [o1],
        f"Observation?subject:Patient={p1}": [o1],
        f"Observation?focus={p2}": [o1],
        f"Observation?focus:missing=false&subject={p1}": [o1],
        "Patient?identifier=urn:a.b|x\\|y=z(1)+": [p1],
        "Patient?identifier=x\\|y=z(1)+": [p1],
        "Patient?identifier=urn:a.b|": [p1],
        "Patient?identifier=urn:a.c|": [],
        "Patient?identifier=|no-system": [p2],
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|x\\|y=z(1)+":
            [p1],
        "Patient?gender:missing=true": [p2],
        "Patient?gender:missing=false": [p1],
        "Patient?gender:not=male": [p1, p2],
        "Patient?_profile:below=http://acme.org/fhir": [p1],
        "Patient?_profile:below=http://acme.org/f.": [],
        "Patient?_profile:above=http://acme.org/fhir/StructureDefinition/p/1": [p1],
        "Patient?_profile=http://acme.org/fhir/StructureDefinition/p": [p1],
    }
    for query, want in cases.items():
        assert _ids(fhir, query) == sorted(want), query


def test_chains_revinclude_and_conditional_criteria_on_keys(fhir) -> None:  # type: ignore[no-untyped-def]
    """search.html#chaining, search.html#revinclude, http.html#ccreate: joins
    compare references as keys."""
    p1 = fhir.create(f.patient(identifier=[{"system": "urn:s", "value": "1"}]))["id"]
    p2 = fhir.create(f.patient(family="Other"))["id"]
    o1 = fhir.create(f.observation(p1))["id"]
    fhir.create(f.observation(p2))
    assert _ids(fhir, "Observation?subject:Patient.identifier=urn:s|1") == [o1]
    assert _ids(fhir, "Observation?patient.name=chalmers") == [o1]
    resp = fhir.get(f"Patient?_id={p1}&_revinclude=Observation:subject")
    got = sorted(e["resource"]["id"] for e in resp.get_json()["entry"])
    assert got == sorted([p1, o1])
    again = fhir.post("Observation", f.observation(p1),
                      headers={"If-None-Exist": f"subject=Patient/{p1}&code=15074-8"})
    assert again.status_code == 200, again.get_json()
    assert _ids(fhir, f"Patient/{p1}/Observation?code=15074-8") == [o1]
    sorted_ = fhir.get("Observation?code=15074-8&_sort=patient").get_json()["entry"]
    assert [e["resource"]["subject"]["reference"] for e in sorted_] == \
        sorted([f"Patient/{p1}", f"Patient/{p2}"])


def test_key_conditions_never_widen_a_granular_scope(fhir, app) -> None:  # type: ignore[no-untyped-def]
    """SMART granular scopes (``patient/Observation.rs?category=laboratory``) with
    search.html#token ``:missing`` and ``:not``, and search.html#reference on another
    patient: the caller's conditions on ``k`` only narrow what the scope allows."""
    from tests.conftest import mint

    me = fhir.create(f.patient())["id"]
    other = fhir.create(f.patient(family="Hidden"))["id"]
    lab = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory"}]}]
    lab_obs = fhir.create(f.observation(me, category=lab))["id"]
    fhir.create(f.observation(me, code="1-1"))
    fhir.create(f.observation(other, category=lab))
    headers = {"Authorization": "Bearer " + mint(
        app, "patient", "patient/Observation.rs?category=laboratory", patient=me)}
    cases = {
        "Observation?category:missing=true": [],
        "Observation?category:not=laboratory": [],
        "Observation?code:not=15074-8": [],
        "Observation?code:missing=false": [lab_obs],
        f"Observation?subject=Patient/{other}": [],
        f"Observation?patient={other}&category=laboratory": [],
        f"Observation?patient={me}": [lab_obs],
    }
    for query, want in cases.items():
        resp = fhir.get(_url(query), headers=headers)
        assert resp.status_code == 200, (query, resp.get_json())
        got = sorted(e["resource"]["id"] for e in resp.get_json().get("entry", [])
                     if e["resource"]["resourceType"] == "Observation")
        assert got == sorted(want), query
