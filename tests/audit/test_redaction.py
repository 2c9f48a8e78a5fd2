"""The access log shows a request's shape, not who was looked up (DESIGN.md section 1:
misuse and leaks are what residents fear; R4 search.html section 3.1.1.5 names the
result-control parameters, the only values kept)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from gunicorn.config import Config

from fhirserver.audit.access_log import RedactingLogger, redact_atoms
from fhirserver.audit.redaction import redact_query, redact_request_line, redact_target

RESIDENT_ID = "11010519491231002X"
PHONE = "13800138000"


@pytest.mark.parametrize(("query", "shown"), [
    ("", ""),
    ("_count=10&_sort=-date", "_count=10&_sort=-date"),
    (f"identifier=https://fhirserver.example/sid/resident-id|{RESIDENT_ID}", "identifier=***"),
    (f"identifier=https%3A%2F%2Fx%7C{RESIDENT_ID}&_count=5", "identifier=***&_count=5"),
    (f"phone={PHONE}&telecom=phone|{PHONE}", "phone=***&telecom=***"),
    ("subject=Patient/p1&_has:Observation:subject:code=http://loinc.org|75622-1",
     "subject=***&_has:Observation:subject:code=***"),
    ("_has%3AObservation%3Asubject%3Acode=1", "_has:Observation:subject:code=***"),
    ("subject:Patient.identifier=x|1&name:contains=wang", "subject:Patient.identifier=***&name:contains=***"),
    ("_include=Observation:patient&_revinclude=DiagnosticReport:result&_include:iterate=x",
     "_include=Observation:patient&_revinclude=DiagnosticReport:result&_include:iterate=x"),
    ("_summary=count&_total=accurate&_format=json&_pretty=true&_elements=id,code&_type=Patient",
     "_summary=count&_total=accurate&_format=json&_pretty=true&_elements=id,code&_type=Patient"),
    ("_cursor=eyJhIjpbIldhbmciXX0&_id=abc", "_cursor=***&_id=***"),
    (PHONE, "***"),  # a value sent without a name
    (f"{RESIDENT_ID}=1", "***"),  # or as the name
    ("a%0Ab=1", "***"),  # no forged log lines
    ("_summary", "_summary"),
    ("a=1&&b=2", "a=***&&b=***"),
    ("code=a=b", "code=***"),
])
def test_query_values_outside_the_allowlist_are_hidden(query, shown):
    assert redact_query(query) == shown


@pytest.mark.parametrize(("line", "shown"), [
    (f"GET /Patient?identifier=sys|{RESIDENT_ID}&_count=1 HTTP/1.1",
     "GET /Patient?identifier=***&_count=1 HTTP/1.1"),
    ("GET /Patient/123 HTTP/1.1", "GET /Patient/123 HTTP/1.1"),
    ("GET /Patient? HTTP/1.1", "GET /Patient? HTTP/1.1"),
    (f"GET /x?phone={PHONE}", "GET /x?phone=***"),
    ("garbage", "garbage"),
])
def test_request_line(line, shown):
    assert redact_request_line(line) == shown


def test_referer_urls_lose_their_query_and_fragment():
    url = f"https://app.example/cb?code=SECRET&state=s#access_token={PHONE}"
    assert redact_target(url) == "https://app.example/cb?code=***&state=***#***"


class _Response:
    status = "200 OK"
    sent = 10
    headers = [("Content-Type", "application/fhir+json")]


def test_gunicorns_atoms_carry_no_identifier_or_credential():
    """The logger class gunicorn uses (``logger_class``), fed gunicorn's own atoms."""
    query = f"identifier=sys|{RESIDENT_ID}&phone={PHONE}&_count=5"
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/Patient?{query}", "PATH_INFO": "/Patient",
               "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "HTTP_REFERER": f"https://app.example/?phone={PHONE}",
               "HTTP_AUTHORIZATION": "Bearer abc.def.ghi"}
    headers = [("AUTHORIZATION", "Bearer abc.def.ghi"), ("REFERER", environ["HTTP_REFERER"])]
    logger = RedactingLogger(Config())
    atoms = logger.atoms(_Response(), headers, environ, timedelta(milliseconds=3))
    text = repr(atoms)
    assert RESIDENT_ID not in text and PHONE not in text and "abc.def.ghi" not in text
    assert atoms["r"] == "GET /Patient?identifier=***&phone=***&_count=5 HTTP/1.1"
    assert atoms["q"] == "identifier=***&phone=***&_count=5"
    assert atoms["U"] == "/Patient" and atoms["s"] == "200"


def test_atoms_that_are_not_strings_are_left_alone():
    assert redact_atoms({"B": 10, "r": "GET / HTTP/1.1"}) == {"B": 10, "r": "GET / HTTP/1.1"}
