"""Query string -> SearchQuery: result parameters, unknown parameters and errors
(search.html#return, search.html#errors, search.html#modifiers)."""

from __future__ import annotations

from typing import Any

import pytest

from fhirserver.errors import Invalid
from fhirserver.search.parse import parse_query
from fhirserver.search.query import Chain, Clause, Has, Include

from .conftest import NOW, SHANGHAI


def parse(items: list[tuple[str, str]], rtype: str = "Observation", **kw: Any) -> Any:
    return parse_query(rtype, items, tz=SHANGHAI, now=NOW, **kw)


def test_result_parameters() -> None:
    q = parse([("_count", "5"), ("_sort", "-date,code"), ("_total", "accurate"),
               ("_summary", "true"), ("_elements", "code, subject"),
               ("_include", "Observation:patient"),
               ("_include:iterate", "DiagnosticReport:result:Observation"),
               ("_revinclude", "DiagnosticReport:result"), ("_format", "json"),
               ("_pretty", "true")])
    assert (q.count, q.sort, q.total, q.summary, q.elements) == (
        5, (("date", True), ("code", False)), "accurate", "true", ("code", "subject"))
    assert q.includes == (Include("Observation", "patient"),
                          Include("DiagnosticReport", "result", "Observation", iterate=True))
    assert q.revincludes == (Include("DiagnosticReport", "result"),)
    assert q.ignored == ()
    assert ("_format", "json") not in q.applied and ("_count", "5") in q.applied


@pytest.mark.parametrize(("given", "expected"), [(None, 20), ("0", 0), ("50", 50), ("5000", 1000)])
def test_count_default_and_cap(given: str | None, expected: int) -> None:
    """search.html#count: the server may return fewer than asked (max_count)."""
    items = [("_count", given)] if given is not None else []
    q = parse(items)
    assert q.count == expected
    if given is not None:
        assert q.applied == (("_count", str(expected)),)


def test_include_wildcard() -> None:
    assert parse([("_include", "*")]).includes == (Include("*", "*"),)


@pytest.mark.parametrize(("key", "raw", "message"), [
    ("birthdate", "xx", "Invalid date value 'xx' for search parameter 'birthdate'"),
    ("birthdate", "2013-13-01", "Invalid date value '2013-13-01'"),
    ("_count", "-1", "Invalid '_count' value '-1'"),
    ("_total", "some", "Invalid '_total' value 'some'"),
    ("_summary", "maybe", "Invalid '_summary' value 'maybe'"),
    ("_include", "Observation", "expected Type:parameter"),
    ("_include", "Observation:code", "'code' is not a reference"),
    ("_include", "Foo:bar", "unknown resource type 'Foo'"),
    ("family:sounds", "x", "Unknown modifier ':sounds'"),
    ("gender:in", "http://vs", "Unsupported modifier ':in'"),
    ("birthdate:exact", "2013", "Unknown modifier ':exact'"),
    ("gender:missing", "maybe", "Invalid ':missing' value 'maybe'"),
    ("identifier:of-type", "a|b", "':of-type' needs"),
    ("general-practitioner", "Patient/", "Invalid reference value"),
    ("_id:missing", "true", "Unsupported modifier ':missing' on '_id'"),
])
def test_malformed_values_are_invalid(key: str, raw: str, message: str) -> None:
    with pytest.raises(Invalid) as e:
        parse([(key, raw)], rtype="Patient")
    assert message in str(e.value)
    assert e.value.status == 400


@pytest.mark.parametrize(("key", "raw", "message"), [
    ("value-quantity", "abc", "Invalid quantity value 'abc' for search parameter 'value-quantity'"),
    ("value-quantity", "5|a", "Invalid quantity value"),
    ("value-quantity", "5|http://unitsofmeasure.org|", "a system needs a code"),
    ("code", "|", "Invalid token value '|'"),
    ("code-value-quantity", "8480-6", "expected 2 components"),
    ("code-value-quantity", "http://loinc.org|$5", "the first component needs a code"),
    ("subject:Patient", "Group/1", "not a Patient reference"),
])
def test_malformed_observation_values(key: str, raw: str, message: str) -> None:
    with pytest.raises(Invalid) as e:
        parse([(key, raw)])
    assert message in str(e.value)
    assert e.value.issues[0].expression == (key.partition(":")[0],)


def test_unknown_and_unsupported_parameters_are_ignored_and_reported() -> None:
    """search.html#errors: lenient handling ignores them; the self link leaves them out."""
    q = parse([("foo", "1"), ("subject.foo", "x"), ("_has:AuditEvent:entity:user", "1"),
               ("code", ""), ("_sort", "code-value-quantity"), ("code", "x"),
               ("_contained", "true"), ("encounter.status", "x")])
    assert q.ignored == (
        ("foo", "unknown search parameter for Observation"),
        ("subject.foo", "unknown search parameter 'foo' for Group; "
                        "unknown search parameter 'foo' for Patient"),
        ("_has:AuditEvent:entity:user", "resources of type 'AuditEvent' are not held by this server"),
        ("code", "empty value"),
        ("_sort", "cannot sort on 'code-value-quantity'"),
        ("_contained", "this parameter is not supported"),
        ("encounter.status", "'encounter' points to resources this server does not hold"),
    )
    assert q.applied == (("code", "x"),)
    assert len(q.clauses) == 1 and q.sort == ()


def test_chain_parses_per_held_target_type_search_chaining() -> None:
    """search.html#chaining: ``subject.name`` chains into every target type that has
    ``name`` (Observation.subject may be Group, Device, Patient or Location; only
    Patient is held); ``:Patient`` names the type; chains nest."""
    (chain,) = parse([("subject.name", "peter")]).clauses
    assert isinstance(chain, Chain) and chain.param.name == "subject"
    assert [t for t, _ in chain.inner] == ["Patient"]
    inner = chain.inner[0][1]
    assert isinstance(inner, Clause) and inner.param.name == "name"
    (typed,) = parse([("subject:Patient.identifier", "urn:oid:1|123")]).clauses
    assert isinstance(typed, Chain) and typed.inner[0][0] == "Patient"
    (nested,) = parse([("derived-from:Observation.patient.gender", "male")]).clauses
    assert isinstance(nested, Chain)
    deeper = nested.inner[0][1]
    assert isinstance(deeper, Chain) and deeper.inner[0][0] == "Patient"


def test_has_parses_recursively_search_has() -> None:
    """search.html#has: ``_has:Observation:patient:code=x`` on Patient; nested _has."""
    (has,) = parse([("_has:Observation:patient:code", "1234-5")], rtype="Patient").clauses
    assert isinstance(has, Has)
    assert (has.target, has.source, has.param.name) == ("Patient", "Observation", "patient")
    assert isinstance(has.inner, Clause) and has.inner.param.name == "code"
    (nested,) = parse([("_has:Observation:patient:_has:DiagnosticReport:result:status",
                        "final")], rtype="Patient").clauses
    assert isinstance(nested, Has) and isinstance(nested.inner, Has)
    assert nested.inner.target == "Observation"


@pytest.mark.parametrize(("rtype", "key", "message"), [
    ("Observation", "code.text", "is a token, not a reference"),
    ("Observation", "subject:Practitioner.name", "cannot point to Practitioner"),
    ("Patient", "_has:Observation", "expected _has:Type:reference:parameter"),
    ("Patient", "_has:Observation:code:status", "is a token, not a reference"),
    ("Observation", "_has:DiagnosticReport:subject:status", "cannot point to Observation"),
])
def test_malformed_chains_are_refused(rtype: str, key: str, message: str) -> None:
    with pytest.raises(Invalid) as e:
        parse([(key, "x")], rtype=rtype)
    assert message in str(e.value)
    assert e.value.issues[0].expression == (key,)


def test_malformed_value_inside_a_chain_is_refused() -> None:
    with pytest.raises(Invalid, match="birthdate"):
        parse([("subject.birthdate", "not-a-date")])


@pytest.mark.parametrize("items", [
    [("foo", "1")], [("subject.foo", "x")], [("_text", "x")], [("_sort", "nope")],
])
def test_strict_handling_refuses_what_it_would_ignore(items: list[tuple[str, str]]) -> None:
    """http.html#ccreate and Prefer: handling=strict: an ignored criterion is an error."""
    with pytest.raises(Invalid):
        parse(items, strict=True)


def test_clauses_are_and_of_or_lists() -> None:
    """search.html#combining: comma = OR within a clause, repetition = AND of clauses."""
    q = parse([("code", "a,b"), ("code", "c")])
    assert [[v.code for v in c.values] for c in q.clauses] == [["a", "b"], ["c"]]


def test_applied_keeps_modifiers_and_values_as_given() -> None:
    q = parse([("code:text", "Glu"), ("_sort", "-date")])
    assert q.applied == (("code:text", "Glu"), ("_sort", "-date"))


def test_query_is_frozen_and_comparable() -> None:
    a = parse([("code", "a"), ("date", "ge2013")])
    b = parse([("code", "a"), ("date", "ge2013")])
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.count = 3  # type: ignore[misc]
