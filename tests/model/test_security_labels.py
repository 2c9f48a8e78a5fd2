"""Sensitive security labels (R4 security-labels.html)."""

from __future__ import annotations

import pytest

from fhirserver.model.security_labels import is_sensitive

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


@pytest.mark.parametrize(("labels", "sensitive"), [
    ([{"system": ACT, "code": "HIV"}], True),
    ([{"system": ACT, "code": "PSY"}], True),
    ([{"system": CONF, "code": "R"}], True),
    ([{"system": CONF, "code": "V"}], True),
    ([{"system": CONF, "code": "N"}], False),
    ([{"system": "urn:other", "code": "HIV"}], False),
    ([], False),
])
def test_sensitive_labels(labels: list, sensitive: bool) -> None:
    assert is_sensitive({"resourceType": "Observation", "meta": {"security": labels}}) is sensitive
