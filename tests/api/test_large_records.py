"""A record of large resources reads whole.

A stored resource may take up to 16 MiB (storage/limits.py), and MongoDB ends a
reply's batch at 16 MiB, serving the rest to getMore. FerretDB 1.x filled a batch to
its count alone, so a few such resources of one patient made a reply larger than the
driver accepts (48 MB) and the search answered 500 (scripts/ferretdb/patches/
reply-size-limit.patch). Searches must return every match however large
(search.html#count: ``_count`` bounds the number of resources, not their size)."""

from __future__ import annotations

from tests import factories as f

from .test_search import get, ids, obs_at

#: Enough large Observations that one batch of them passes the driver's 48 MB.
LARGE = 7
TEXT = 7_500_000


def _large(pid: str, i: int) -> dict:
    body = obs_at(pid, f"2024-05-{i + 1:02d}T08:00:00Z")
    body["code"]["text"] = f"{i} " + "x" * TEXT  # a free-text code, as long as allowed
    return body


def test_a_patients_large_resources_come_back_in_one_search_search_count(fhir):
    """search.html#count and #sort: ``Observation?patient=X`` answers with every one of
    a patient's Observations, about 55 MB stored, unsorted and ``_sort=-date``, and
    ``$everything`` (patient-operation-everything.html) pages through them all."""
    pid = fhir.create(f.patient())["id"]
    made = [fhir.create(_large(pid, i))["id"] for i in range(LARGE)]
    small = fhir.create(obs_at(pid, "2024-05-20T08:00:00Z"))["id"]

    plain = get(fhir, f"Observation?patient={pid}&_count=100")
    assert sorted(ids(plain)) == sorted([*made, small])
    assert all(len(r["code"].get("text", "")) in (0, TEXT + 2)
               for r in (e["resource"] for e in plain["entry"]))

    newest = get(fhir, f"Observation?patient={pid}&_sort=-date&_count=100")
    assert ids(newest) == [small, *reversed(made)]

    seen: list[str] = []
    page = get(fhir, f"Patient/{pid}/$everything?_count=100")
    while True:
        seen += [e["resource"]["id"] for e in page.get("entry", [])
                 if e["resource"]["resourceType"] == "Observation"]
        nxt = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
        if not nxt:
            break
        page = get(fhir, nxt[0].split("/fhir/", 1)[1])
    assert sorted(seen) == sorted([*made, small])
