"""The shared test data: FHIR R4 spec examples and Synthea bundles (shared/data/README.md)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
if not SHARED.exists():
    SHARED = Path(os.environ.get("SHARED_DATA", "../shared/data")).resolve()

TYPES = ("Patient", "Observation", "DiagnosticReport")
SPEC = SHARED / "spec-examples"
SYNTHEA = SHARED / "synthea"


def spec_files() -> list[Path]:
    return sorted(p for t in TYPES for p in (SPEC / t).glob("*.json"))


def bundle_files() -> list[Path]:
    return sorted((SPEC / "Bundle").glob("*.json"))


def synthea_files() -> list[Path]:
    return sorted(SYNTHEA.glob("*.json.gz"))


def load(path: Path) -> Any:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    return json.loads(path.read_text(encoding="utf-8"))


def bundle_resources(bundle: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(entry index, resource) for every Patient, Observation and DiagnosticReport."""
    for index, entry in enumerate(bundle.get("entry", [])):
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource.get("resourceType") in TYPES:
            yield index, resource
