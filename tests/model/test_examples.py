"""Every R4 example of the stored types, and every Synthea one, is accepted: the
server must round-trip the spec's own examples (shared/data/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirserver.errors import FhirError
from fhirserver.model.validation import validate_resource

from .data import bundle_files, bundle_resources, load, spec_files, synthea_files

pytestmark = pytest.mark.skipif(not spec_files(), reason="shared/data is not available")


def _problems(resources: list[tuple[str, dict]]) -> list[str]:
    out = []
    for where, resource in resources:
        try:
            validate_resource(resource, resource["resourceType"])
        except FhirError as error:
            out.append(f"{where}: {error.status} {error.message}")
    return out


@pytest.mark.parametrize("path", spec_files(), ids=lambda p: p.name)
def test_spec_example_validates(path: Path) -> None:
    """The R4 examples, e.g. Observation-f001.json (observation-example-f001-glucose)."""
    assert _problems([(path.name, load(path))]) == []


@pytest.mark.parametrize("path", bundle_files(), ids=lambda p: p.name)
def test_spec_bundle_resources_validate(path: Path) -> None:
    found = [(f"entry[{i}]", r) for i, r in bundle_resources(load(path))]
    assert _problems(found) == []


@pytest.mark.parametrize("path", synthea_files(), ids=lambda p: p.name.split("_")[0])
def test_synthea_resources_validate(path: Path) -> None:
    found = [(f"entry[{i}]", r) for i, r in bundle_resources(load(path))]
    assert found
    assert _problems(found) == []


def test_the_examples_are_all_there() -> None:
    """shared/data/README.md: 22 Patient, 64 Observation, 6 DiagnosticReport, 20 Bundles,
    40 Synthea bundles."""
    assert len(spec_files()) == 92
    assert len(bundle_files()) == 20
    assert len(synthea_files()) == 40
