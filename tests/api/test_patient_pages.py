"""A patient's records in date order (search.html#sort, http.html#paging,
patient-operation-everything.html): pages are complete and in order, and a page
reads about what it shows, not the patient's whole record (search/buckets.py)."""

from __future__ import annotations

from pymongo import monitoring
from pymongo.monitoring import CommandListener

from tests import factories as f
from tests.finds import listening

from .test_access import clinician, scan_card


class Returned(CommandListener):
    """How many resource documents the database hands back (first batches and more)."""

    def __init__(self) -> None:
        self.active = False
        self.documents = 0

    def started(self, event) -> None:  # type: ignore[no-untyped-def]
        pass

    def succeeded(self, event) -> None:  # type: ignore[no-untyped-def]
        if not self.active or event.command_name not in ("find", "getMore"):
            return
        cursor = event.reply.get("cursor") or {}
        if str(cursor.get("ns", "")).split(".", 1)[-1] in ("Observation", "DiagnosticReport"):
            self.documents += len(cursor.get("firstBatch") or cursor.get("nextBatch") or [])

    def failed(self, event) -> None:  # type: ignore[no-untyped-def]
        pass


RETURNED = Returned()
monitoring.register(RETURNED)  # applies to the clients of apps created afterwards

#: Effective times over 13 months, several in a month; one record without a date and
#: one whose period spans two months.
WHEN = [f"2023-{m:02d}-{d:02d}T08:00:00+08:00" for m in range(1, 13) for d in (3, 17)] + [
    "2024-01-05T08:00:00+08:00"]


def _all(fhir, url: str) -> list[dict]:
    out, bundle = [], fhir.get(url).get_json()
    while True:
        out += [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]
        nxt = [lnk["url"] for lnk in bundle["link"] if lnk["relation"] == "next"]
        if not nxt:
            return out
        bundle = fhir.get(nxt[0].split("/fhir/", 1)[1]).get_json()


def _records(fhir) -> tuple[str, list[str]]:
    pid = fhir.create(f.patient())["id"]
    ids = [fhir.create(f.observation(pid, effectiveDateTime=w))["id"] for w in WHEN]
    undated = f.observation(pid)
    undated.pop("effectiveDateTime", None)
    ids.append(fhir.create(undated)["id"])
    spanning = f.observation(pid)
    spanning.pop("effectiveDateTime", None)
    spanning["effectivePeriod"] = {"start": "2023-06-30T20:00:00Z", "end": "2023-08-01T04:00:00Z"}
    ids.append(fhir.create(spanning)["id"])
    return pid, ids


def _expected(fhir, pid: str, descending: bool) -> list[str]:
    """The order search.html#sort defines, computed here from the stored records."""
    from datetime import datetime

    def edge(r: dict) -> datetime | None:
        if "effectiveDateTime" in r:
            return datetime.fromisoformat(r["effectiveDateTime"])
        p = r.get("effectivePeriod")
        return datetime.fromisoformat(p["end"] if descending else p["start"]) if p else None

    records = _all(fhir, f"Observation?patient={pid}&_count=100")
    dated = sorted((r for r in records if edge(r)), key=lambda r: (edge(r), r["id"]))
    undated = sorted(r["id"] for r in records if not edge(r))
    if descending:
        dated = sorted(dated, key=lambda r: r["id"])
        dated = sorted(dated, key=lambda r: edge(r), reverse=True)  # type: ignore[arg-type,return-value]
        return [r["id"] for r in dated] + undated
    return undated + [r["id"] for r in dated]


def test_date_sorted_pages_of_a_patient_are_complete_and_in_order_search_sort(fhir):
    pid, ids = _records(fhir)
    for descending in (True, False):
        sort = "-date" if descending else "date"
        got = [r["id"] for r in _all(fhir, f"Observation?patient={pid}&_sort={sort}&_count=4")]
        assert sorted(got) == sorted(ids)
        assert got == _expected(fhir, pid, descending), sort


def test_a_first_page_reads_about_what_it_shows_not_the_whole_record(fhir):
    """The newest page of a 27-record patient reads the newest months, not 27 records."""
    pid, _ = _records(fhir)
    RETURNED.documents, RETURNED.active = 0, True
    try:
        bundle = fhir.get(f"Observation?patient={pid}&_sort=-date&_count=3").get_json()
    finally:
        RETURNED.active = False
    assert [e["resource"]["effectiveDateTime"][:7] for e in bundle["entry"]] == \
        ["2024-01", "2023-12", "2023-12"]
    assert RETURNED.documents <= 4 + 1, RETURNED.documents


def test_a_patients_records_without_sort_come_newest_first_search_sort(fhir):
    """search.html#sort leaves the order of a search without ``_sort`` to the server: a
    patient's results come newest first, as with ``_sort=-date``, each once over the
    pages, and the first page reads the newest months, not the patient's whole record
    (which a heavy patient's first page used to cost). A filter that keeps few records
    of each month (a date range with a category) is ordered the same way."""
    pid, _ = _records(fhir)
    newest = _expected(fhir, pid, descending=True)
    assert [r["id"] for r in _all(fhir, f"Observation?patient={pid}&_count=4")] == newest
    RETURNED.documents, RETURNED.active = 0, True
    try:
        bundle = fhir.get(f"Observation?patient={pid}&_count=3").get_json()
    finally:
        RETURNED.active = False
    assert [e["resource"]["id"] for e in bundle["entry"]] == newest[:3]
    assert RETURNED.documents <= 4 + 1, RETURNED.documents
    since = [r["id"] for r in _all(fhir, f"Observation?patient={pid}&date=ge2023-10-01&_count=2")]
    assert since == [i for i in newest if i in set(since)] and len(since) == 7, since


def test_a_link_to_the_next_page_made_in_id_order_goes_on_in_that_order_http_paging(fhir):
    """http.html#paging: a next link an earlier version gave for a patient's records
    (in id order, before they came newest first) still leads to the records after
    its last one in that order, each once."""
    from fhirserver.interactions.bundles import encode_cursor
    from fhirserver.search.sorting import encode_key

    pid, ids = _records(fhir)
    by_id = sorted(ids)
    cursor = encode_cursor({"a": encode_key([by_id[3]])})
    bundle = fhir.get(f"Observation?patient={pid}&_count=4&_cursor={cursor}").get_json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == by_id[4:8]


def test_everything_pages_hold_every_record_once_newest_first(fhir):
    """patient-operation-everything.html: every record of the compartment, once."""
    pid, ids = _records(fhir)
    got = _all(fhir, f"Patient/{pid}/$everything?_count=5")
    assert got[0]["resourceType"] == "Patient"
    obs = [r["id"] for r in got if r["resourceType"] == "Observation"]
    assert sorted(obs) == sorted(ids) and len(obs) == len(set(obs))
    assert obs == _expected(fhir, pid, descending=True)


PATIENT_FINDS = listening("Patient")


def test_everything_reads_the_patient_once_patient_operation_everything(fhir, app):
    """patient-operation-everything.html: the first page leads with the Patient, which
    the operation has already read to answer 404/410 as a read would; it is not read
    again, for an operator or a clinician who treats the patient. A second page
    reads no Patient at all."""
    pid, _ = _records(fhir)
    dr = clinician(app, fhir)
    scan_card(fhir, app, pid, dr)
    for who in (fhir, dr):
        PATIENT_FINDS.filters, PATIENT_FINDS.active = [], True
        try:
            bundle = who.get(f"Patient/{pid}/$everything?_count=5").get_json()
        finally:
            PATIENT_FINDS.active = False
        assert [e["resource"]["resourceType"] for e in bundle["entry"]] == \
            ["Patient"] + ["Observation"] * 4
        assert bundle["entry"][0]["resource"]["id"] == pid
        assert len(PATIENT_FINDS.filters) == 1, PATIENT_FINDS.filters
        nxt = next(lnk["url"] for lnk in bundle["link"] if lnk["relation"] == "next")
        PATIENT_FINDS.filters, PATIENT_FINDS.active = [], True
        try:
            page = who.get(nxt.split("/fhir/", 1)[1]).get_json()
        finally:
            PATIENT_FINDS.active = False
        assert {e["resource"]["resourceType"] for e in page["entry"]} == {"Observation"}
        assert len(PATIENT_FINDS.filters) == 1, PATIENT_FINDS.filters  # the 404/410 read


def test_total_is_exact_on_one_page_and_counted_only_on_request_search_total(fhir):
    """search.html#total: a one-page result carries its exact total; a longer one
    carries it when ``_total=accurate`` asks, since counting reads every match."""
    pid, ids = _records(fhir)
    assert fhir.get(f"Observation?patient={pid}&_count=100").get_json()["total"] == len(ids)
    assert "total" not in fhir.get(f"Observation?patient={pid}&_count=5").get_json()
    accurate = fhir.get(f"Observation?patient={pid}&_count=5&_total=accurate").get_json()
    assert accurate["total"] == len(ids)


class Sent(CommandListener):
    """The find commands sent for resources and the month registry, and the
    documents they return."""

    def __init__(self) -> None:
        self.active = False
        self.finds = 0
        self.documents = 0

    def started(self, event) -> None:  # type: ignore[no-untyped-def]
        if self.active and event.command_name == "find" and str(
                event.command.get("find")) in ("Observation", "_months"):
            self.finds += 1

    def succeeded(self, event) -> None:  # type: ignore[no-untyped-def]
        if self.active and event.command_name in ("find", "getMore"):
            cursor = event.reply.get("cursor") or {}
            if str(cursor.get("ns", "")).split(".", 1)[-1] in ("Observation", "_months"):
                self.documents += len(cursor.get("firstBatch") or cursor.get("nextBatch") or [])

    def failed(self, event) -> None:  # type: ignore[no-untyped-def]
        pass


SENT = Sent()
monitoring.register(SENT)


def test_a_hidden_patients_record_costs_what_a_missing_patients_costs(app, fhir):
    """A clinician who does not treat a patient learns nothing from how long a search
    of that patient takes: the database reads the same for a patient with 27 records
    as for one who does not exist (the reach is narrowed before the database is asked)."""
    from flask.testing import FlaskClient

    from tests.conftest import mint

    pid, _ = _records(fhir)
    token = mint(app, kind="user", scope="user/*.rs", practitioner="Practitioner/dr-nobody",
                 subject="dr-nobody")
    dr = FlaskClient(app)
    work = {}
    for name, who in (("hidden", pid), ("missing", "no-such-patient")):
        for query in (f"Observation?patient={who}&_sort=-date", f"Observation?patient={who}"):
            SENT.finds, SENT.documents, SENT.active = 0, 0, True
            r = dr.get("/" + query, headers={"Authorization": f"Bearer {token}"})
            SENT.active = False
            assert r.status_code == 200 and not r.get_json().get("entry"), r.get_json()
            work[(name, query.replace(who, "X"))] = (SENT.finds, SENT.documents)
    for query in ("Observation?patient=X&_sort=-date", "Observation?patient=X"):
        assert work[("hidden", query)] == work[("missing", query)], work
        assert work[("hidden", query)][1] == 0


def _crowded(fhir) -> tuple[str, list[str]]:
    """A patient with more records in one month than a month is read whole for
    (an intensive-care stay: three a day over 20 days), and a few months around it."""
    from fhirserver.search.buckets import DENSE

    pid = fhir.create(f.patient())["id"]
    when = [f"2024-03-{d:02d}T{h:02d}:00:00+08:00" for d in range(1, 21) for h in (8, 12, 20)]
    when += ["2024-01-10T08:00:00+08:00", "2024-05-02T08:00:00+08:00"]
    assert len(when) > DENSE + 2
    return pid, [fhir.create(f.observation(pid, effectiveDateTime=w))["id"] for w in when]


BUCKETS = listening("Observation")


def _first_page_reads(app, fhir, pid: str) -> tuple[list[str], int]:
    """The dates the newest page of four shows, and how many records the database
    holds in the buckets it asked for (what FerretDB decodes to answer)."""
    BUCKETS.filters, BUCKETS.active = [], True
    try:
        bundle = fhir.get(f"Observation?patient={pid}&_sort=-date&_count=4").get_json()
    finally:
        BUCKETS.active = False
    db = app.extensions["fhirserver"].repo.db
    asked = [str(q.get("b")) for q in BUCKETS.filters]
    read = sum(db["Observation"].count_documents({"pat": pid, "b": b}) for b in asked)
    return [e["resource"]["effectiveDateTime"][:10] for e in bundle["entry"]], read


def test_a_crowded_month_is_read_day_by_day_and_its_pages_stay_complete_search_sort(app, fhir):
    """search.html#sort, http.html#paging: pages that start, resume and end inside a
    month of 60 records hold every record once, in order; the first page reads the
    newest days, not the month."""
    pid, ids = _crowded(fhir)
    for descending in (True, False):
        sort = "-date" if descending else "date"
        got = [r["id"] for r in _all(fhir, f"Observation?patient={pid}&_sort={sort}&_count=7")]
        assert got == _expected(fhir, pid, descending), sort
        assert sorted(got) == sorted(ids)
    shown, read = _first_page_reads(app, fhir, pid)
    assert shown == ["2024-05-02", "2024-03-20", "2024-03-20", "2024-03-20"]
    assert read <= 4 + 1 + 3, read  # the newest month, then the newest days of March


def test_a_page_resuming_after_an_undated_record_reads_the_crowded_month_search_sort(fhir):
    """search.html#sort: ascending, records without a date come first; a page whose
    cursor is on one of them goes on through every dated record, a month read day by
    day included (http.html#paging: no page skips a record)."""
    pid, ids = _crowded(fhir)
    for _ in range(4):
        undated = f.observation(pid)
        undated.pop("effectiveDateTime", None)
        ids.append(fhir.create(undated)["id"])
    got = [r["id"] for r in _all(fhir, f"Observation?patient={pid}&_sort=date&_count=3")]
    assert got == _expected(fhir, pid, descending=False)
    assert sorted(got) == sorted(ids)


def test_records_of_a_year_before_1000_sort_before_later_ones_once_search_sort(fhir):
    """A FHIR dateTime's year runs from 0001: a record of year 999 sorts before one of
    2024 and shows once, ascending and descending, on every page size."""
    pid = fhir.create(f.patient())["id"]
    ids = [fhir.create(f.observation(pid, effectiveDateTime=w))["id"] for w in
           ("0999-03-10T08:00:00Z", "2024-01-05T08:00:00Z", "2024-02-05T08:00:00Z")]
    for count in (1, 2, 5):
        for descending in (True, False):
            sort = "-date" if descending else "date"
            got = [r["id"] for r in _all(
                fhir, f"Observation?patient={pid}&_sort={sort}&_count={count}")]
            assert got == (ids[::-1] if descending else ids), (sort, count)


def _as_before_day_buckets(db, pid: str) -> None:  # type: ignore[no-untyped-def]
    """The patient's records and months as a version before day buckets left them."""
    for doc in db["Observation"].find({"pat": pid}, {"b": 1}):
        db["Observation"].update_one({"_id": doc["_id"]}, {"$set": {"b": doc["b"][:2]}})
    db["_months"].delete_many({"g": {"$regex": f"^Observation\\|{pid}\\|date.2024-"}})
    db["_months"].update_many({"g": {"$regex": f"^Observation\\|{pid}\\|"}},
                              {"$unset": {"v": "", "n": ""}})
    db["_schema"].delete_many({"_id": "day-buckets"})


def test_a_month_crowded_before_day_buckets_is_read_by_day_after_the_upgrade_pass(app, fhir):
    """A database written before records had days: its crowded month is read whole
    until the one-time pass (storage/day_buckets.py) gives that month's records their
    days; no page loses or repeats a record on either side of it."""
    pid, ids = _crowded(fhir)
    repo = app.extensions["fhirserver"].repo
    db = repo.db
    _as_before_day_buckets(db, pid)
    before = _expected(fhir, pid, True)
    _, read = _first_page_reads(app, fhir, pid)
    assert read > 60, read  # the month is read whole

    assert repo.day_buckets_pending()
    assert repo.add_day_buckets() == 60
    assert not repo.day_buckets_pending() and repo.add_day_buckets() == 0
    shown, read = _first_page_reads(app, fhir, pid)
    assert shown == ["2024-05-02", "2024-03-20", "2024-03-20", "2024-03-20"]
    assert read <= 4 + 1 + 3, read
    for descending in (True, False):
        sort = "-date" if descending else "date"
        got = [r["id"] for r in _all(fhir, f"Observation?patient={pid}&_sort={sort}&_count=9")]
        assert got == _expected(fhir, pid, descending), sort
    assert _expected(fhir, pid, True) == before and sorted(before) == sorted(ids)


class MovedWhileRead(CommandListener):
    """Moves one record to another month just after the day-bucket pass has read the
    records of a crowded month (``bucket``): a write of another server sharing the
    database."""

    def __init__(self) -> None:
        self.move: object = None
        self.bucket = ""
        self.request = None

    def started(self, event) -> None:  # type: ignore[no-untyped-def]
        if self.move is not None and event.command_name == "find" and \
                event.command.get("find") == "Observation" and \
                (event.command.get("filter") or {}).get("b") == self.bucket:
            self.request = event.request_id

    def succeeded(self, event) -> None:  # type: ignore[no-untyped-def]
        if self.move is not None and event.request_id == self.request:
            move, self.move = self.move, None
            move()  # type: ignore[operator]

    def failed(self, event) -> None:  # type: ignore[no-untyped-def]
        pass


MOVED = MovedWhileRead()
monitoring.register(MOVED)


def test_a_record_moved_while_the_day_pass_reads_its_month_keeps_its_new_place(app, fhir):
    """search.html#sort: a record another server moves to another month while the
    one-time day pass (storage/day_buckets.py) rewrites its old month is found in its
    new month, in order, once; the pass does not write back the buckets it read."""
    pid, ids = _crowded(fhir)
    spanning = f.observation(pid)  # from the crowded month into one that is not
    spanning.pop("effectiveDateTime", None)
    spanning["effectivePeriod"] = {"start": "2024-03-10T20:00:00Z", "end": "2024-04-02T04:00:00Z"}
    ids.append(fhir.create(spanning)["id"])
    repo = app.extensions["fhirserver"].repo
    db = repo.db
    _as_before_day_buckets(db, pid)
    moved = fhir.get(f"Observation/{ids[-1]}").get_json()
    moved["effectivePeriod"] = {"start": "2023-07-04T08:00:00Z", "end": "2023-07-05T08:00:00Z"}

    def move() -> None:
        assert fhir.put(f"Observation/{ids[-1]}", moved).status_code == 200

    MOVED.move, MOVED.bucket = move, "date<2024-03"
    repo.add_day_buckets()
    assert MOVED.move is None  # the write happened inside the pass
    for descending in (True, False):
        sort = "-date" if descending else "date"
        got = [r["id"] for r in _all(fhir, f"Observation?patient={pid}&_sort={sort}&_count=9")]
        assert got == _expected(fhir, pid, descending), sort
        assert sorted(got) == sorted(ids)


def test_two_workers_opening_the_same_months_at_once_lose_no_record(settings):
    """Two server processes whose first records in a month arrive together both
    register that month (the second upsert is refused on the primary key and must be
    retried as an update); every create succeeds, each month counts both records, and
    a sorted walk finds them all (search.html#sort)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from fhirserver.search.buckets import DAYS
    from tests.conftest import FhirClient, make_app

    apps = [make_app(settings) for _ in range(2)]
    pid = FhirClient(apps[0].test_client()).create(f.patient())["id"]
    together = threading.Barrier(2)

    def write(worker: int) -> list[str]:
        client, out = FhirClient(apps[worker].test_client()), []
        for month in range(1, 13):
            together.wait(timeout=30)
            out.append(client.create(f.observation(
                pid, effectiveDateTime=f"2022-{month:02d}-0{worker + 1}T08:00:00Z"))["id"])
        return out

    with ThreadPoolExecutor(2) as pool:
        ids = [i for got in pool.map(write, range(2)) for i in got]
    fhir = FhirClient(apps[1].test_client())
    got = [r["id"] for r in _all(fhir, f"Observation?patient={pid}&_sort=-date&_count=5")]
    assert sorted(got) == sorted(ids) and len(got) == 24
    months = list(apps[0].extensions["fhirserver"].repo.db["_months"].find(
        {"g": f"Observation|{pid}|date>"}))
    assert sorted(m["m"] for m in months) == [f"2022-{m:02d}" for m in range(1, 13)]
    assert all(m["n"] == 2 and m["v"] == DAYS for m in months), months
    for app in apps:
        app.extensions["fhirserver"].repo.close()
