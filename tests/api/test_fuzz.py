"""Generated hostile requests over every route, operation and search parameter
(tests/fuzz_cases.py): never a 500, every error an OperationOutcome (R4
http.html#return, operationoutcome.html), and a refused request changes nothing
stored (http.html#transaction: all or nothing).

A bounded number of examples runs here; ``scripts/fuzz.py`` runs the same
generators against a live server for as long as asked.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

from tests.conftest import make_app
from tests.fuzz_cases import (
    TYPES,
    Call,
    calls,
    problems,
    route_table,
    search_calls,
    search_parameters,
    seed_resources,
)

if TYPE_CHECKING:
    from flask import Flask

pytestmark = pytest.mark.db

#: Examples per route (a third of it per search parameter); scripts/fuzz.py runs more.
EXAMPLES = int(os.environ.get("FHIR_FUZZ_EXAMPLES", "12"))
ROUTES = route_table()
PARAMETERS = search_parameters()
#: Collections a refused request must leave as they were (audit records and
#: sign-in bookkeeping change on every request by design).
STORED = tuple(n for t in TYPES for n in (t, f"{t}_history")) + ("_identifier_claims", "_journal")


@pytest.fixture(scope="module")
def fuzz_app(database_server: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Flask, dict[str, list[str]]]]:
    """One app and database for all examples, with a few resources of each type to hit."""
    from fhirserver.config import Settings

    uri, pg_url = database_server
    name = f"test_fuzz_{uuid.uuid4().hex[:12]}"
    application = make_app(Settings(mongodb_uri=uri, mongodb_db=name,
                                    data_dir=Path(tmp_path_factory.mktemp("fuzz")),
                                    ferretdb_postgresql_url=pg_url,
                                    base_url="http://fhir.test/fhir"))
    client = application.test_client()
    ids: dict[str, list[str]] = {t: [] for t in TYPES}
    for i in range(2):
        patient = seed_resources("none")[0] | {"identifier": [
            {"system": "http://example.org/mrn", "value": f"A-{i}"}]}
        r = client.post("/Patient", json=patient, content_type="application/fhir+json")
        assert r.status_code == 201, r.get_json()
        ids["Patient"].append(r.get_json()["id"])
    for rtype in ("Observation", "DiagnosticReport"):
        resources = seed_resources(ids["Patient"][0], (ids["Observation"] or ["none"])[0])
        r = client.post(f"/{rtype}", json=next(x for x in resources if x["resourceType"] == rtype),
                        content_type="application/fhir+json")
        assert r.status_code == 201, r.get_json()
        ids[rtype].append(r.get_json()["id"])
    yield application, ids
    application.extensions["fhirserver"].repo.close()
    with MongoClient(uri) as mongo:
        mongo.drop_database(name)


def _snapshot(application: Flask) -> dict[str, Any]:
    db = application.extensions["fhirserver"].repo.db
    return {name: sorted((d["_id"], d.get("v")) for d in db[name].find({}, {"v": 1}))
            for name in STORED}


def _send(application: Flask, call: Call) -> tuple[int, str, bytes]:
    response = application.test_client().open(call.path, method=call.method,
                                              headers=call.headers, data=call.body)
    return response.status_code, response.content_type or "", response.get_data()


def _check(application: Flask, strategy: st.SearchStrategy[Call], examples: int) -> None:
    """Any request ``strategy`` makes: a 4xx carries an OperationOutcome
    (http.html#return), nothing answers 5xx, and a refused request leaves every
    stored resource and history entry as it was (http.html#transaction)."""

    # The same examples on every run, so that the suite is stable; scripts/fuzz.py
    # explores new ones.
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(call=strategy)
    def check(call: Call) -> None:
        before = _snapshot(application) if call.method != "GET" else None
        status, content_type, body = _send(application, call)
        found = problems(call, status, content_type, body)
        if before is not None and status >= 400 and _snapshot(application) != before:
            found.append(f"{status} refused, but stored data changed")
        assert not found, f"{call}\n -> " + "; ".join(found)

    check()


@pytest.mark.parametrize(("rule", "methods"), ROUTES, ids=[r for r, _ in ROUTES])
def test_every_route_answers_hostile_requests_without_500_or_partial_writes(
        fuzz_app: tuple[Flask, dict[str, list[str]]], rule: str, methods: frozenset[str]) -> None:
    """Each route of the API, with hostile ids, query strings, headers and bodies."""
    application, ids = fuzz_app
    resources = seed_resources(ids["Patient"][0], ids["Observation"][0])
    _check(application, calls([(rule, methods)], ids, resources), EXAMPLES)


@pytest.mark.parametrize(("rtype", "name"), PARAMETERS, ids=[f"{t}-{n}" for t, n in PARAMETERS])
def test_every_search_parameter_answers_hostile_values_without_500(
        fuzz_app: tuple[Flask, dict[str, list[str]]], rtype: str, name: str) -> None:
    """Each search parameter of each type (search.html), with every modifier, prefix
    and hostile values, by GET and by POST _search: 400 for what is wrong, never 500."""
    application, _ = fuzz_app
    _check(application, search_calls(rtype, name), max(3, EXAMPLES // 3))


# -- what the fuzzing found, each pinned down ------------------------------------------

def test_a_nul_in_a_string_of_a_body_is_refused_by_name(fhir: Any) -> None:
    """datatypes.html#string: FHIR strings hold no NUL, and PostgreSQL cannot store
    one: 400 naming it, and nothing stored (it was a 500)."""
    body = '{"resourceType": "Patient", "name": [{"family": "a\\u0000b"}]}'
    r = fhir.post("Patient", body)
    assert r.status_code == 400, r.get_json()
    assert "NUL" in r.get_json()["issue"][0]["diagnostics"]
    assert fhir.get("Patient?_total=accurate").get_json()["total"] == 0
    # the text "\u0000" (an escaped backslash, then u0000) is an ordinary string
    r = fhir.post("Patient", '{"resourceType": "Patient", "name": [{"family": "a\\\\u0000b"}]}')
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["name"][0]["family"] == "a\\u0000b"


@pytest.mark.parametrize("path", ["/Patient?name=a%00b", "/Patient/a%00b", "/%00/x/$accept-family",
                                  "/Observation?code=http://loinc.org%7C1%00"])
def test_a_nul_in_the_path_or_query_is_400_and_audited(fhir: Any, app: Flask, path: str) -> None:
    """A NUL in a search value or id is refused (400 OperationOutcome), and the
    request is still audited, the NUL replaced by U+FFFD in its record (it was a
    500, or a 503 when the audit record could not be stored)."""
    db = app.extensions["fhirserver"].repo.db
    before = db["_audit"].count_documents({})
    r = fhir.get(path) if "$" not in path else fhir.post(path, {"resourceType": "Parameters"})
    # 400, not the 503 of an audit record that could not be stored
    assert r.status_code == 400, r.get_data()
    assert r.get_json()["resourceType"] == "OperationOutcome"
    assert db["_audit"].count_documents({}) > before
