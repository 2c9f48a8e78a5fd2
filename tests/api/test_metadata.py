"""/metadata (FHIR R4 http.html#capabilities) and the OpenAPI document."""

from __future__ import annotations

from fhirserver.search.catalog import parameters_for


def test_capability_statement_lists_registered_interactions_http_capabilities(fhir):
    r = fhir.get("metadata")
    assert r.status_code == 200
    cs = r.get_json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert set(cs["format"]) == {"application/fhir+json", "application/json",
                                 "application/fhir+xml", "application/xml"}
    rest = cs["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    types = {r["type"]: r for r in rest["resource"]}
    assert set(types) == {"Patient", "Observation", "DiagnosticReport", "CareTeam",
                          "Practitioner", "Organization", "PractitionerRole", "Group", "NamingSystem",
                          "OperationDefinition", "AuditEvent"}
    for directory in ("NamingSystem", "OperationDefinition"):
        assert {i["code"] for i in types.pop(directory)["interaction"]} == {"read", "search-type"}
    assert {i["code"] for i in types.pop("AuditEvent")["interaction"]} == {"search-type"}
    for rtype, res in types.items():
        codes = {i["code"] for i in res["interaction"]}
        assert codes == {"read", "vread", "update", "patch", "delete", "history-instance",
                         "history-type", "create", "search-type"}
        assert res["conditionalCreate"] and res["conditionalUpdate"]
        assert res["conditionalDelete"] == "single"
        assert res["versioning"] == "versioned-update"
        names = {p["name"] for p in res["searchParam"]}
        assert names == set(parameters_for(rtype))


def test_capability_statement_follows_the_routes(app, fhir):
    """Generated, not hand-written: an interaction without a route is not claimed."""
    rules = [r for r in app.url_map.iter_rules() if r.rule == "/<rtype>/<rid>"]
    for rule in rules:
        rule.methods.discard("PATCH")
    cs = fhir.get("metadata").get_json()
    codes = {i["code"] for i in cs["rest"][0]["resource"][0]["interaction"]}
    assert "patch" not in codes and "read" in codes


def test_openapi_document_and_docs_page(client):
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.get_json()["paths"]
    assert "/Patient/{id}" in paths and "/metadata" in paths
    docs = client.get("/docs")
    assert docs.status_code == 200 and b"swagger" in docs.data.lower()
