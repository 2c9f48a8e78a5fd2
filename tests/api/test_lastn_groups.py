"""``Observation/$lastn`` (R4 observation-operation-lastn.html) of one patient from the
registered groups and the latest months (storage/latest.py): the same answer as
reading the whole record, newest first, for every code however long ago it was
last measured, at the cost of the latest months and the codes they miss."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import bson
from pymongo import monitoring
from pymongo.monitoring import CommandListener

from tests import factories as f
from tests.conftest import FhirClient, make_app
from tests.finds import listening

from .test_search import get, ids, obs_at
from .test_unsorted_patient_pages import _decoded

FINDS = listening("Observation")


def _coded(pid: str, when: str, code: str, system: str = "http://loinc.org") -> dict:
    body = obs_at(pid, when)
    body["code"] = {"coding": [{"system": system, "code": code}]}
    return body


def _many(fhir, bodies: list[dict]) -> list[str]:
    """Create ``bodies`` in transaction Bundles; their ids, in order."""
    out: list[str] = []
    for i in range(0, len(bodies), 50):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": b, "request": {"method": "POST", "url": "Observation"}}
            for b in bodies[i:i + 50]]}
        r = fhir.post("", bundle)
        assert r.status_code == 200, r.get_json()
        out += [e["response"]["location"].split("/")[1] for e in r.get_json()["entry"]]
    return out


def _monthly(fhir, pid: str, code: str, years: range, day: int = 10) -> list[str]:
    """One result of ``code`` each month of ``years``, oldest first."""
    return _many(fhir, [_coded(pid, f"{y}-{m:02d}-{day:02d}T08:00:00Z", code)
                        for y in years for m in range(1, 13)])


def _expected(fhir, pid: str, most: int, extra: str = "") -> list[str]:
    """$lastn by its definition: every record of the patient (``_sort=-date``, then
    id, as $lastn orders ties), the ``most`` first of each code."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    url = f"Observation?patient={pid}&_sort=-date,_id&_count=1000{extra}"
    for e in get(fhir, url).get("entry", []):
        r = e["resource"]
        code = r["code"]
        key = tuple(sorted((c.get("system"), c["code"]) for c in code.get("coding", []))) \
            or (code.get("text"),)
        if len(groups[key]) < most:
            groups[key].append(r["id"])
    return sorted(i for group in groups.values() for i in group)


@contextmanager
def _before_groups(app, settings, pid: str) -> Iterator[FhirClient]:
    """A client of a server started on the database as a version that did not register
    $lastn groups left it (for ``pid``)."""
    db = app.extensions["fhirserver"].repo.db
    db["_months"].delete_many({"g": f"Observation|{pid}|code"})
    db["_schema"].delete_many({"_id": "code-groups"})
    older = make_app(settings)
    try:
        yield FhirClient(older.test_client())
    finally:
        older.extensions["fhirserver"].repo.close()


def _lastn(app, fhir, url: str) -> tuple[list[str], int]:
    """The ids $lastn returns and how many records its finds selected."""
    FINDS.filters, FINDS.active = [], True
    try:
        found = ids(get(fhir, url))
    finally:
        FINDS.active = False
    return found, _decoded(app, FINDS.filters)


def _long_history(fhir) -> tuple[str, dict[str, list[str]]]:
    """A patient measured twice a month for six years, two codes each time (enough
    records a code that the latest months are read, not the whole record:
    storage/latest.py, up to ``max=2``), with a code measured twice ten years ago,
    one once in 2001 and one written only as text in 2009; returns the ids of each
    code, oldest first."""
    pid = fhir.create(f.patient())["id"]
    made: dict[str, list[str]] = defaultdict(list)
    for code, day in (("8480-6", 16), ("8462-4", 14)):
        made[code] = _many(fhir, [_coded(pid, f"{y}-{m:02d}-{d:02d}T08:00:00Z", code)
                                  for y in range(2019, 2025) for m in range(1, 13)
                                  for d in (day - 10, day)])
    for when in ("2014-03-01T08:00:00Z", "2014-07-01T08:00:00Z"):
        made["2339-0"].append(fhir.create(_coded(pid, when, "2339-0"))["id"])
    made["urn"].append(fhir.create(_coded(pid, "2001-01-01", "a|b", "urn:x"))["id"])
    text = {**obs_at(pid, "2009-05-05"), "code": {"text": "Smoking status, as told"}}
    made["text"].append(fhir.create(text)["id"])
    return pid, made


def test_lastn_finds_every_code_however_long_ago_it_was_last_measured(app, fhir):
    """observation-operation-lastn.html: "the most recent N observations for each code",
    whatever the date of the last one: codes measured years before the latest months
    (one with a ``|`` in its code, one written only as text) come back, newest first
    within each group, as reading the whole record gives them, for any ``max`` and
    with a filter that keeps some of them."""
    pid, made = _long_history(fhir)
    for most, named in ((1, f"patient={pid}"), (2, f"subject=Patient/{pid}"),
                        (3, f"patient=Patient/{pid}"), (40, f"patient={pid}")):
        got = ids(get(fhir, f"Observation/$lastn?{named}&max={most}"))
        assert sorted(got) == _expected(fhir, pid, most), most
        assert len(got) == len(set(got))
        for code, oldest_first in made.items():
            newest = oldest_first[::-1][:most]
            at = got.index(newest[0])
            assert got[at:at + len(newest)] == newest, (most, code)
    for extra in ("&date=lt2020-01-01", "&date=ge2023-06-01", "&value-quantity=gt0",
                  "&status=final"):
        got = ids(get(fhir, f"Observation/$lastn?patient={pid}&max=2{extra}"))
        assert sorted(got) == _expected(fhir, pid, 2, extra), extra


def test_lastn_of_a_long_record_reads_its_latest_months_and_its_rare_codes(app, fhir):
    """$lastn of a patient measured monthly for years reads the latest months and each
    rarely measured code's own records, not the whole record."""
    pid = fhir.create(f.patient())["id"]
    _monthly(fhir, pid, "8480-6", range(2019, 2025))
    rare = fhir.create(_coded(pid, "2012-02-02", "2339-0"))["id"]
    got, read = _lastn(app, fhir, f"Observation/$lastn?patient={pid}")
    assert sorted(got) == _expected(fhir, pid, 1) and rare in got
    assert read <= 6, (read, FINDS.filters)


def test_lastn_filtered_reads_what_the_filter_keeps_not_each_group(app, fhir):
    """A $lastn with a filter beyond the patient (``category=laboratory``) reads the
    records the filter keeps, in one query: the groups it excludes are not read one
    by one."""
    pid = fhir.create(f.patient())["id"]
    lab = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                   "observation-category", "code": "laboratory"}]}]
    for n in range(20):
        fhir.create(_coded(pid, f"2024-{1 + n % 12:02d}-0{1 + n // 12}", f"9{n:03d}-0"))
    one = fhir.create({**_coded(pid, "2010-01-01", "2339-0"), "category": lab})["id"]
    got, read = _lastn(app, fhir, f"Observation/$lastn?patient={pid}&category=laboratory")
    assert got == [one]
    assert len(FINDS.filters) == 1 and read == 1, FINDS.filters


def test_lastn_after_many_codes_were_deleted_reads_the_record_once(app, fhir):
    """Groups stay registered when their records are deleted (R4 http.html#delete):
    a $lastn of a patient with many groups and few records reads the record in one
    query, not one query a group."""
    pid = fhir.create(f.patient())["id"]
    live = [fhir.create(_coded(pid, f"2020-0{m}-01", f"1{m}-0"))["id"] for m in range(1, 6)]
    gone = _many(fhir, [_coded(pid, f"2015-{1 + n % 12:02d}-1{n // 12}", f"8{n:03d}-1")
                        for n in range(70)])
    for rid in gone:
        fhir.delete(f"Observation/{rid}")
    got, _ = _lastn(app, fhir, f"Observation/$lastn?patient={pid}")
    assert sorted(got) == sorted(live)
    assert len(FINDS.filters) <= 12 + 1, len(FINDS.filters)


def test_lastn_of_codes_longer_than_an_index_entry(app, fhir, settings):
    """A code may be as long as a string may (R4 datatypes.html#code has no limit):
    its Observation is stored (201) and found by $lastn, in a database that
    registers groups and in one written before it did."""
    pid = fhir.create(f.patient())["id"]
    long_code = secrets.token_hex(4000)  # does not compress: longer than an index row
    r = fhir.post("Observation", _coded(pid, "2024-01-01", long_code, "urn:x"))
    assert r.status_code == 201, r.get_json()
    short = _monthly(fhir, pid, "8480-6", range(2019, 2025))[-1]
    expected = sorted([r.get_json()["id"], short])
    assert sorted(ids(get(fhir, f"Observation/$lastn?patient={pid}"))) == expected
    with _before_groups(app, settings, pid) as client:
        for _ in range(2):
            assert sorted(ids(get(client, f"Observation/$lastn?patient={pid}"))) == expected


def test_lastn_sees_a_code_an_update_gives_and_forgets_a_deleted_one(app, fhir):
    """A record updated to a new code is found under it, and no longer under its old
    one; a deleted record is not returned (R4 http.html#update, #delete)."""
    pid, made = _long_history(fhir)
    moved = made["2339-0"][0]
    body = get(fhir, f"Observation/{moved}")
    body["code"] = {"coding": [{"system": "http://loinc.org", "code": "718-7"}]}
    assert fhir.put(f"Observation/{moved}", body).status_code == 200
    fhir.delete(f"Observation/{made['urn'][0]}")
    got = ids(get(fhir, f"Observation/$lastn?patient={pid}"))
    assert sorted(got) == _expected(fhir, pid, 1)
    assert moved in got and made["urn"][0] not in got and made["2339-0"][1] in got


def test_lastn_of_records_stored_before_groups_were_registered(app, fhir, settings):
    """A database written by a version that did not register $lastn groups: the first
    $lastn of a patient reads the record once and registers its groups; every later
    one gives the same answer from the registry, a code created since included."""
    pid, _ = _long_history(fhir)
    db = app.extensions["fhirserver"].repo.db
    with _before_groups(app, settings, pid) as client:
        expected = _expected(fhir, pid, 2)
        assert sorted(ids(get(client, f"Observation/$lastn?patient={pid}&max=2"))) == expected
        assert db["_months"].count_documents({"g": f"Observation|{pid}|code"}) == 6  # 5 + done
        new = client.create(_coded(pid, "2003-03-03", "6690-2"))["id"]
        got = ids(get(client, f"Observation/$lastn?patient={pid}&max=2"))
        assert sorted(got) == _expected(fhir, pid, 2) and new in got


def test_lastn_of_a_short_record_reads_it_in_one_query(app, fhir):
    """A patient with a few dozen results: one query reads them all for less than the
    registry and a walk of their months would cost."""
    pid = fhir.create(f.patient())["id"]
    made = _many(fhir, [_coded(pid, f"2024-{m:02d}-03", f"{m % 3}-8") for m in range(1, 13)])
    got, read = _lastn(app, fhir, f"Observation/$lastn?patient={pid}&max=2")
    assert sorted(got) == _expected(fhir, pid, 2) == sorted(made[-6:])
    assert len(FINDS.filters) == 1 and read == len(made), FINDS.filters


def test_lastn_of_a_crowded_month_reads_some_of_its_days(app, fhir):
    """A month of one patient crowded with results of one code (an intensive-care
    stay, read by day: search/buckets.py) counts as many records, whatever its count
    says: $lastn reads a few of its days and the older code's own records, not the
    whole stay."""
    from fhirserver.search.buckets import DENSE

    pid = fhir.create(f.patient())["id"]
    old = fhir.create(_coded(pid, "2019-05-05", "2339-0"))["id"]
    stay = [fhir.create(_coded(pid, f"2024-12-{1 + i // 6:02d}T{8 + i % 6:02d}:00:00Z",
                               "8310-5"))["id"] for i in range(2 * DENSE)]
    got, read = _lastn(app, fhir, f"Observation/$lastn?patient={pid}")
    assert sorted(got) == sorted([old, stay[-1]])
    assert read <= 6 * 3 + 1, (read, FINDS.filters)


class _RegistryBytes(CommandListener):
    """How many bytes the registry's replies (months and $lastn groups) carry."""

    def __init__(self) -> None:
        self.active = False
        self.size = 0

    def started(self, event) -> None:  # type: ignore[no-untyped-def]
        pass

    def succeeded(self, event) -> None:  # type: ignore[no-untyped-def]
        cursor = event.reply.get("cursor") or {}
        if self.active and event.command_name in ("find", "getMore") \
                and str(cursor.get("ns", "")).split(".", 1)[-1] == "_months":
            self.size += len(bson.encode(event.reply))

    def failed(self, event) -> None:  # type: ignore[no-untyped-def]
        pass


REGISTRY_BYTES = _RegistryBytes()
monitoring.register(REGISTRY_BYTES)


def test_lastn_reads_a_patients_groups_without_their_codes(app, fhir):
    """R4 datatypes.html#string: a code's text has no length limit, and each $lastn
    group of a patient is registered with its code. $lastn reads the patient's groups
    without those codes: what the registry hands back does not grow with them (about
    50 MB of codes made one reply that the driver refused: a 500). The answer is
    $lastn's definition (observation-operation-lastn.html)."""
    pid = fhir.create(f.patient())["id"]
    _monthly(fhir, pid, "8480-6", range(2019, 2025))
    for n in range(3):
        text = f"{n} " + secrets.token_hex(50_000)
        body = {**obs_at(pid, f"2010-0{n + 1}-05"), "code": {"text": text}}
        assert fhir.post("Observation", body).status_code == 201
    REGISTRY_BYTES.size, REGISTRY_BYTES.active = 0, True
    try:
        got = ids(get(fhir, f"Observation/$lastn?patient={pid}"))
    finally:
        REGISTRY_BYTES.active = False
    assert sorted(got) == _expected(fhir, pid, 1)
    assert REGISTRY_BYTES.size < 50_000, REGISTRY_BYTES.size
