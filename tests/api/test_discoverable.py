"""A discoverable API: the OpenAPI document and its docs page (OpenAPI 3.1, security
scheme object section 4.8.27), the OperationDefinitions (R4 operationdefinition.html)
and the CapabilityStatement that names them (R4 http.html#capabilities)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fhir.resources.R4B.operationdefinition import OperationDefinition
from flask.testing import FlaskClient

from fhirserver.api import opdefs
from fhirserver.model.types import SUPPORTED_TYPES

BASE = "http://fhir.test/fhir"  # the settings fixture's FHIR_BASE_URL, hence the issuer


@pytest.fixture
def anonymous(app) -> FlaskClient:  # type: ignore[no-untyped-def]
    """A client that sends no token."""
    return FlaskClient(app)


@pytest.fixture
def spec(anonymous: FlaskClient) -> dict:
    r = anonymous.get("/openapi.json")
    assert r.status_code == 200, r.data[:300]
    return r.get_json()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(values[name] or "")
        self._in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_openapi_and_docs_answer_without_a_token(anonymous):
    """They hold no patient data: like /metadata, no token is asked for."""
    for path in ("/openapi.json", "/docs"):
        r = anonymous.get(path)
        assert r.status_code == 200, (path, r.status_code)
    assert anonymous.get("/Patient").status_code == 401  # the API itself still is closed


def test_docs_page_loads_only_local_assets_under_its_csp(anonymous):
    """Offline hospital networks: every script, style and image comes from this server,
    and the page runs under a Content-Security-Policy allowing nothing else."""
    r = anonymous.get("/docs")
    assert r.mimetype == "text/html"
    page = _Links()
    page.feed(r.get_data(as_text=True))
    assert page.urls and page.inline_scripts == 0
    for url in page.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = anonymous.get(url)
        assert asset.status_code == 200 and asset.data, url
    assert any(u.endswith("swagger-ui-bundle.js") for u in page.urls)
    policy = dict(part.strip().split(" ", 1) for part in r.headers["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'none'"
    assert "cdn" not in r.get_data(as_text=True)
    assert anonymous.get("/docs/../pyproject.toml").status_code == 404
    assert anonymous.get("/docs/not-an-asset.js").status_code == 404


def test_openapi_security_schemes_are_the_servers_smart_endpoints(spec, anonymous):
    """OAuth 2.0 authorization code (PKCE) and client credentials, at the real URLs the
    SMART configuration gives."""
    smart = anonymous.get("/.well-known/smart-configuration").get_json()
    schemes = spec["components"]["securitySchemes"]
    flows = schemes["smart"]["flows"]
    assert schemes["smart"]["type"] == "oauth2"
    assert flows["authorizationCode"]["authorizationUrl"] == smart["authorization_endpoint"]
    assert flows["authorizationCode"]["tokenUrl"] == smart["token_endpoint"]
    assert flows["clientCredentials"]["tokenUrl"] == smart["token_endpoint"]
    assert smart["authorization_endpoint"] == f"{BASE}/oauth/authorize"
    assert "PKCE" in schemes["smart"]["description"]
    assert set(flows["authorizationCode"]["scopes"]) == set(smart["scopes_supported"])
    assert schemes["openid"]["openIdConnectUrl"] == f"{BASE}/.well-known/openid-configuration"
    assert spec["servers"] == [{"url": BASE}]
    assert spec["paths"]["/metadata"]["get"]["security"] == []
    assert spec["paths"]["/Patient/{id}"]["get"].get("security") is None  # the global one


def _rule_regex(rule: str) -> re.Pattern[str]:
    pattern = re.escape(rule)
    for name, repl in (("rtype", "[A-Za-z]+"), ("ctype", "[A-Za-z]+"), ("rid", r"\{id\}"),
                       ("vid", r"\{vid\}"), ("job_id", r"\{job_id\}"), ("name", r"\{name\}")):
        pattern = pattern.replace(re.escape(f"<{name}>"), repl)
    return re.compile(f"^{pattern}$")


def test_every_route_of_the_app_is_in_the_openapi_paths(app, spec):
    """Generated from the URL map: no endpoint is left out of the document."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("docs.", "webapp.")) and rule.rule not in ("/docs", "/openapi.json", "/app/"):
            continue  # the pages' files
        regex = _rule_regex(rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if rule.rule.startswith(("/NamingSystem", "/OperationDefinition")) and method != "GET":
                continue  # read-only types answer 405 to other methods
            found = [p for p, item in spec["paths"].items()
                     if regex.match(p) and method.lower() in item]
            assert found, (rule.rule, method)


def _input_names(op: dict) -> set[str]:
    """The parameter names an OpenAPI operation documents: query parameters, the
    names in a Parameters body, or the properties of a form or JSON body."""
    names = {p["name"] for p in op.get("parameters", []) if "name" in p}
    for content in op.get("requestBody", {}).get("content", {}).values():
        schema = content["schema"]
        items = schema.get("properties", {}).get("parameter", {}).get("items", {})
        names |= {i["properties"]["name"]["const"] for i in items.get("oneOf", [])}
        if "parameter" not in schema.get("properties", {}):
            names |= set(schema.get("properties", {}))
    return names


def test_each_operation_route_has_its_path_and_parameter_names(app, spec):
    """operations.html#request: one path per operation, with the names of its inputs
    (GET as query parameters, POST in a Parameters body)."""
    rules = [r for r in app.url_map.iter_rules() if "$" in r.rule]
    assert len(rules) >= 17
    for rule in rules:
        code = rule.rule.rsplit("$", 1)[1]
        op = next(o for o in opdefs.OPERATIONS if o.code == code and o.instance == ("<rid>" in rule.rule))
        item = spec["paths"][op.path]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            documented = _input_names(item[method.lower()])
            wanted = {p.name for p in op.inputs()
                      if method == "POST" or p.primitive or p.search_type}
            assert wanted <= documented, (op.path, method, wanted - documented)
    # The names that were found only through error messages before.
    assert "payload" in _input_names(spec["paths"]["/Patient/$scan-card"]["post"])
    assert "member" in _input_names(spec["paths"]["/Patient/{id}/$care-team"]["post"])
    assert {"patient", "client_id", "user"} <= _input_names(spec["paths"]["/oauth/launch"]["post"])


def _refs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_bodies_reference_the_fhir_schemas_and_every_ref_resolves(spec, anonymous):
    schemas = spec["components"]["schemas"]
    for rtype in (*SUPPORTED_TYPES, "Parameters", "Bundle", "OperationOutcome"):
        assert schemas[rtype]["properties"]["resourceType"] == {"const": rtype}
    assert "gender" in schemas["Patient"]["properties"]
    assert "status" in schemas["Observation"]["required"]
    for rtype in SUPPORTED_TYPES:
        create = spec["paths"][f"/{rtype}"]["post"]
        assert create["requestBody"]["content"]["application/fhir+json"]["schema"] == {
            "$ref": f"#/components/schemas/{rtype}"}
        assert create["responses"]["201"]["content"]["application/fhir+json"]["schema"] == {
            "$ref": f"#/components/schemas/{rtype}"}
        search = spec["paths"][f"/{rtype}"]["get"]["responses"]["200"]
        assert search["content"]["application/fhir+json"]["schema"]["$ref"].endswith("/Bundle")
    assert spec["paths"]["/Patient/{id}"]["get"]["responses"]["default"] == {
        "$ref": "#/components/responses/Error"}
    for ref in _refs(spec):
        kind, name = ref.removeprefix("#/components/").split("/")
        assert name in spec["components"][kind], ref
    size = len(anonymous.get("/openapi.json").data)
    assert size < 512 * 1024, size  # shared definitions by $ref keep it small


def test_a_resource_from_the_server_validates_against_its_schema(fhir, spec):
    """The schema describes the JSON the server really returns (a Patient it stored)."""
    import jsonschema

    created = fhir.post("Patient", {"resourceType": "Patient", "gender": "female",
                                    "birthDate": "1970-03", "name": [{"family": "Li"}]})
    assert created.status_code == 201
    document = {"components": spec["components"],
                "$ref": "#/components/schemas/Patient"}
    jsonschema.Draft202012Validator(document).validate(created.get_json())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(document).validate({"resourceType": "Patient",
                                                            "gender": "unknown-value"})


def test_capability_statement_lists_every_type_and_the_issuer(anonymous):
    """http.html#capabilities: AuditEvent, NamingSystem and OperationDefinition are
    served, so listed; implementation.url is the issuer of the tokens."""
    cs = anonymous.get("/metadata").get_json()
    types = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert {"AuditEvent", "NamingSystem", "OperationDefinition", *SUPPORTED_TYPES} <= set(types)
    assert {i["code"] for i in types["OperationDefinition"]["interaction"]} == {"read", "search-type"}
    smart = anonymous.get("/.well-known/smart-configuration").get_json()
    assert cs["implementation"]["url"] == smart["issuer"] == BASE


def test_each_custom_operation_definition_is_at_its_canonical_url(anonymous):
    """operationdefinition.html: every operation the CapabilityStatement names that is
    this server's own resolves at that URL, without a token, and validates as an R4
    OperationDefinition describing that operation."""
    cs = anonymous.get("/metadata").get_json()
    named = [(r["type"], o) for r in cs["rest"][0]["resource"] for o in r.get("operation", [])]
    named += [("", o) for o in cs["rest"][0].get("operation", [])]  # system-level ($export)
    assert len(named) == len(opdefs.OPERATIONS)
    own = [(t, o) for t, o in named if o["definition"].startswith(BASE)]
    assert {o["name"] for _, o in own} >= {"scan-card", "care-team", "break-glass", "consent"}
    for rtype, entry in named:
        op = next(x for x in opdefs.OPERATIONS if x.code == entry["name"] and x.resource == rtype)
        assert (op.standard is None) == entry["definition"].startswith(BASE), entry
        r = anonymous.get(f"/OperationDefinition/{op.id}")
        assert r.status_code == 200, op.id
        resource = r.get_json()
        OperationDefinition.model_validate(resource)
        assert resource["code"] == op.code and resource.get("resource", []) == ([rtype] if rtype else [])
        assert resource["system"] == (not rtype)
        assert resource["url"] == f"{BASE}/OperationDefinition/{op.id}"
        assert resource.get("base") == op.standard
        assert resource["instance"] == op.instance
        assert [p["name"] for p in resource["parameter"]] == [p.name for p in op.params]
        if op.standard is None:
            assert resource["url"] == entry["definition"]


def test_operation_definition_search_and_errors(anonymous, fhir):
    found = anonymous.get("/OperationDefinition").get_json()
    assert found["resourceType"] == "Bundle" and found["total"] == len(opdefs.OPERATIONS)
    one = anonymous.get("/OperationDefinition?code=scan-card").get_json()
    assert [e["resource"]["id"] for e in one["entry"]] == ["Patient-scan-card"]
    by_url = anonymous.get(f"/OperationDefinition?url={BASE}/OperationDefinition/Patient-family")
    assert by_url.get_json()["total"] == 1
    missing = anonymous.get("/OperationDefinition/Patient-nothing")
    assert missing.status_code == 404 and missing.get_json()["resourceType"] == "OperationOutcome"
    assert fhir.post("OperationDefinition", {"resourceType": "OperationDefinition"}).status_code == 405
    assert fhir.get("OperationDefinition/Patient-scan-card").status_code == 200  # with a token too


def test_readme_table_lists_every_operation_with_its_parameters():
    """The README's operation table keeps up with the operations the server offers."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in readme.splitlines()
            if line.startswith("| `") and "$" in line.split("|")[1]}
    for op in opdefs.OPERATIONS:
        row = rows.get(op.path.lstrip("/"))
        assert row is not None, op.path
        assert all(m in row for m in op.methods), op.path
        for p in op.inputs():
            if op.code != "lastn" or p.name == "max":
                assert f"`{p.name}`" in row, (op.path, p.name)
