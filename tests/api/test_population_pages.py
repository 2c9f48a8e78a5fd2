"""Unsorted population pages (search.html#paging, http.html#paging): a search without a
patient (``Observation?code=Y``) pages through every match once, forward and back, and a
page reads a few shards of the matches, not all of them (search/shards.py)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import urlsplit

import orjson
import pytest

from fhirserver.search.shards import ORDER_FIELD, SHARD_FIELD, order_of
from tests import factories as f
from tests.finds import listening
from tests.seq_scans import no_seq_scans

COMMON, RARE = "2345-7", "2339-0"


FINDS = listening("Observation")


def _batch(fhir, resources: list[dict]) -> list[str]:  # type: ignore[no-untyped-def]
    r = fhir.post("", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": res, "request": {"method": "POST", "url": "Observation"}}
        for res in resources]})
    assert r.status_code == 200, r.get_json()
    return [e["response"]["location"].split("/")[1] for e in r.get_json()["entry"]]


def _population(fhir, common: int = 300, rare: int = 5) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    patients = [fhir.create(f.patient(f"Pop{i}"))["id"] for i in range(3)]
    common_ids: list[str] = []
    for start in range(0, common, 100):
        common_ids += _batch(fhir, [f.observation(patients[i % 3], code=COMMON, value=i)
                                    for i in range(start, min(start + 100, common))])
    rare_ids = _batch(fhir, [f.observation(patients[i % 3], code=RARE)
                             for i in range(rare)]) if rare else []
    return common_ids, rare_ids


def _link(bundle: dict, relation: str) -> str:
    """The bundle's link of ``relation`` as a path of the test client ("" if none)."""
    for link in bundle.get("link", []):
        if link["relation"] == relation:
            parts = urlsplit(link["url"])
            return parts.path.split("/fhir/", 1)[-1] + "?" + parts.query
    return ""


def _pages(fhir, url: str, relation: str = "next") -> Iterator[dict]:  # type: ignore[no-untyped-def]
    while url:
        r = fhir.get(url)
        assert r.status_code == 200, r.get_json()
        bundle = r.get_json()
        yield bundle
        url = _link(bundle, relation)


def _ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") == "match"]


def _ordered(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: (order_of(i), i))


def test_population_pages_hold_every_match_once_forward_and_back_search_paging(fhir) -> None:
    common, rare = _population(fhir)
    for code, ids, count in ((COMMON, common, 40), (RARE, rare, 2)):
        pages = list(_pages(fhir, f"Observation?code=http://loinc.org|{code}&_count={count}"))
        seen = [i for page in pages for i in _ids(page)]
        assert seen == _ordered(ids), code  # every match once, in one total order
        assert all(len(_ids(p)) == count for p in pages[:-1])
        # Back from the last page: the same pages, in reverse.
        back_url = _link(pages[-1], "previous")
        assert back_url, code
        back = [_ids(p) for p in _pages(fhir, back_url, "previous")]
        assert back == [_ids(p) for p in reversed(pages[:-1])], code


def test_a_population_page_reads_a_few_shards_not_every_match(fhir) -> None:
    """The first page of 300 matches asks the database for a few shards of them: the
    records the top-level equalities of its queries select (what FerretDB decodes) are
    a fraction of the matches. Its pages still come from the full filter."""
    common, _ = _population(fhir)
    FINDS.filters, FINDS.active = [], True
    try:
        bundle = fhir.get(f"Observation?code=http://loinc.org|{COMMON}&_count=10").get_json()
    finally:
        FINDS.active = False
    assert _ids(bundle) == _ordered(common)[:10]
    assert FINDS.filters and all(SHARD_FIELD in q for q in FINDS.filters), FINDS.filters
    selected = sum(1 for q in FINDS.filters for i in common
                   if order_of(i).startswith(q[SHARD_FIELD]))
    assert selected <= 100, selected  # not the 300 a query of the code alone reads


def test_population_pages_of_records_stored_before_shards_are_whole_until_the_pass(
        app, fhir) -> None:
    """An older version stored no shards: pages are read whole (by id) until serve's
    one-time pass has given every record its shards; a cursor from before the pass
    goes on in its own order after it."""
    common, _ = _population(fhir, common=30, rare=0)
    repo = app.extensions["fhirserver"].repo
    observations = repo.db["Observation"]
    for doc in observations.find({}, {"_id": 1}):
        observations.update_one({"_id": doc["_id"]}, {"$unset": {ORDER_FIELD: "", SHARD_FIELD: ""}})
    repo.db["_schema"].delete_many({"_id": "population-shards"})
    repo._shards_ready = False  # as a worker started on the older database finds it

    url = f"Observation?code=http://loinc.org|{COMMON}&_count=7"
    first = next(_pages(fhir, url))
    assert _ids(first) == sorted(common)[:7]  # by id: the order without shards
    assert repo.population_shards_pending()
    assert repo.add_population_shards() == len(common)
    assert not repo.population_shards_pending() and repo.add_population_shards() == 0

    rest = [i for p in _pages(fhir, _link(first, "next")) for i in _ids(p)]
    assert _ids(first) + rest == sorted(common)
    assert [i for p in _pages(fhir, url) for i in _ids(p)] == _ordered(common)


def test_sort_by_id_orders_population_pages_by_id_search_sort(fhir) -> None:
    """``_sort=_id`` (search.html#sort) asks for the id order: a population search that
    names it pages by id, not by the hash order of an unsorted search."""
    common, _ = _population(fhir, common=30, rare=0)
    url = f"Observation?code=http://loinc.org|{COMMON}&_count=7&_sort=_id"
    pages = list(_pages(fhir, url))
    assert [i for p in pages for i in _ids(p)] == sorted(common)
    back = [_ids(p) for p in _pages(fhir, _link(pages[-1], "previous"), "previous")]
    assert back == [_ids(p) for p in reversed(pages[:-1])]


def test_population_page_queries_pin_code_and_shard_to_indexes(database_server, db_name,
                                                                 fhir) -> None:
    """A population page (search.html#paging) costs what it shows only if PostgreSQL
    selects by the code and the shard from indexes: FerretDB sends both equalities
    down, and each query is planned without a sequential scan."""
    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("PostgreSQL plans: the embedded database only")
    _population(fhir, common=100, rare=0)
    checked: list[str] = []
    with no_seq_scans(pg_url, db_name, checked) as scans:
        list(_pages(fhir, f"Observation?code=http://loinc.org|{COMMON}&_count=10"))
    assert any("_jsonb->'k' @>" in sql and "_jsonb->'ps' @>" in sql for sql in checked), checked
    assert not scans, "\n\n".join(scans)


def test_population_pages_estimate_their_total_by_default_search_total(fhir) -> None:
    """search.html#total: a population page gives ``Bundle.total`` as the estimate its
    walk makes (counting would read every match), an exact count for
    ``_total=accurate``, none for ``_total=none``, and the exact size of a result that
    fits one page. 300 matches, pages of 40: the estimate's spread is about 16%."""
    _population(fhir)
    url = f"Observation?code=http://loinc.org|{COMMON}&_count=40"
    pages = list(_pages(fhir, url))
    assert len(pages) == 8
    for page in pages[:-1]:
        assert 100 <= page["total"] <= 900, page["total"]
    back = fhir.get(_link(pages[-1], "previous")).get_json()
    assert 100 <= back["total"] <= 900, back["total"]
    assert 100 <= fhir.get(url + "&_total=estimate").get_json()["total"] <= 900
    assert fhir.get(url + "&_total=accurate").get_json()["total"] == 300
    assert "total" not in fhir.get(url + "&_total=none").get_json()
    rare = fhir.get(f"Observation?code=http://loinc.org|{RARE}&_count=40").get_json()
    assert rare["total"] == 5


def test_a_forged_cursor_holding_both_directions_is_refused_search_paging(fhir) -> None:
    """http.html#paging: a ``next`` or ``previous`` link's cursor names one row to go on
    after or before. One naming both (forged) is refused as a malformed parameter,
    400 with an OperationOutcome, not answered with rows read one way and a total
    estimated the other (it gave 21,474,836,480 for 5 rows)."""
    common, _ = _population(fhir, common=30, rare=0)
    order = _ordered(common)
    forged = base64.urlsafe_b64encode(orjson.dumps(
        {"a": ["00000000", ""], "b": [order_of(order[5]), order[5]]})).decode().rstrip("=")
    r = fhir.get(f"Observation?code=http://loinc.org|{COMMON}&_count=10&_cursor={forged}")
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["resourceType"] == "OperationOutcome"


def test_a_page_emptied_since_its_link_was_made_does_not_say_no_matches_search_total(
        fhir) -> None:
    """search.html#total: ``Bundle.total`` is the number of matches. A ``next`` link
    followed after the rows it led to were deleted reads an empty page; the search
    still has matches, so the page gives no total (or the count, when
    ``_total=accurate`` asks), never 0."""
    _population(fhir, common=30, rare=0)
    pages = list(_pages(fhir, f"Observation?code=http://loinc.org|{COMMON}&_count=10"))
    assert len(pages) == 3
    for rid in _ids(pages[2]):
        assert fhir.delete(f"Observation/{rid}").status_code in (200, 204)
    stale = fhir.get(_link(pages[1], "next")).get_json()
    assert _ids(stale) == []
    assert stale.get("total") != 0, stale
    accurate = fhir.get(_link(pages[1], "next") + "&_total=accurate").get_json()
    assert accurate["total"] == 20
