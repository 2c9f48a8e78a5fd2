"""Test-data factories: small valid resources to build on."""

from __future__ import annotations


def patient(family: str = "Chalmers", given: str = "Peter", **extra: object) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], **extra}


def observation(patient_id: str | None = None, code: str = "15074-8", value: float = 6.3,
                **extra: object) -> dict:
    obs: dict = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "valueQuantity": {"value": value, "unit": "mmol/l", "system": "http://unitsofmeasure.org",
                          "code": "mmol/L"},
        **extra,
    }
    if patient_id:
        obs["subject"] = {"reference": f"Patient/{patient_id}"}
    return obs
