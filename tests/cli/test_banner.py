"""What `fhirserver serve` says on start about the addresses apps use: the issuer
that tokens carry and, for a loopback server without FHIR_BASE_URL, the other
names accepted as ``aud`` (Settings.audiences)."""

from __future__ import annotations

from fhirserver.cli import banner
from fhirserver.config import Settings


def test_loopback_server_names_its_issuer_and_the_other_accepted_audiences():
    lines = banner(Settings(host="127.0.0.1", port=8080))
    assert "FHIR base URL: http://127.0.0.1:8080/  (docs at /docs, web app at /app/)" in lines
    assert any(line.endswith(": http://127.0.0.1:8080") and "issuer" in line for line in lines)
    others = [line for line in lines if "also accepted as aud" in line]
    assert len(others) == 1 and "http://localhost:8080" in others[0]


def test_a_public_base_url_is_the_only_audience():
    lines = banner(Settings(base_url="https://fhir.example/r4/", port=9000))
    assert lines[0] == "FHIR base URL: https://fhir.example/r4/  (docs at /docs, web app at /app/)"
    assert any("issuer" in line and line.endswith("https://fhir.example/r4") for line in lines)
    assert not [line for line in lines if "aud" in line and "also" in line]


def test_listening_on_every_interface_asks_for_a_base_url():
    lines = banner(Settings(host="0.0.0.0"))
    assert any("FHIR_BASE_URL" in line for line in lines)
