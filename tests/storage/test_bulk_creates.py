"""Creates written in bulk (an import's group) that meet another writer's record.

FHIR R4 http.html#create and #transaction: a group is all or nothing, and a create
refused because its id is taken must leave that record, and its history, as the
other writer stored them.
"""

from __future__ import annotations

import pytest

from fhirserver.interactions import write
from fhirserver.interactions.context import Context, Planner
from fhirserver.storage.repository import Repository
from fhirserver.storage.unit_of_work import VersionConflict


def observation(oid: str, value: float) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/bulk-p"},
            "effectiveDateTime": "2024-05-01T10:00:00Z",
            "valueQuantity": {"value": value, "unit": "/min"}}


@pytest.mark.parametrize("taken", [[5], [5, 150], [299]])
def test_a_refused_create_in_a_bulk_of_creates_leaves_the_other_writers_record_http_create(
        settings, taken):
    """300 creates of one type, some of whose ids another writer holds: the commit is
    refused, the other writer's records and history stay as they were, and nothing
    of the 300 is left. FerretDB goes on past a refused insert with its next batch
    of 100, so the records written are those not refused, not the first ones."""
    repo = Repository.from_settings(settings, encrypt=False)
    try:
        ctx = Context(repo, settings, "")
        first = Planner(ctx)
        write.update(first, "Patient", "bulk-p", {"resourceType": "Patient", "id": "bulk-p"})
        for i in taken:
            write.update(first, "Observation", f"b{i}", observation(f"b{i}", 42.0))
        first.commit()
        ids = [f"b{i}" for i in range(300)]
        planner = Planner(ctx)
        planner.presume_absent("Observation", ids)  # as an import's first attempt does
        for rid in ids:
            write.update(planner, "Observation", rid, observation(rid, 1.0))
        with pytest.raises(VersionConflict):
            planner.commit()
        for i in taken:
            kept = repo.get("Observation", f"b{i}")
            assert kept is not None and kept.resource["valueQuantity"]["value"] == 42.0
            assert repo.get_version("Observation", f"b{i}", 1) is not None
        left = [rid for rid in ids if int(rid[1:]) not in taken
                and repo.get("Observation", rid) is not None]
        assert left == []
        assert repo.cols.history["Observation"].count_documents({}) == len(taken)
    finally:
        repo.close()
