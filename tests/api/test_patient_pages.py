"""A patient's records in date order (search.html#sort, http.html#paging,
patient-operation-everything.html): pages are complete and in order, and a page
reads about what it shows, not the patient's whole record (search/buckets.py)."""

from __future__ import annotations

from pymongo import monitoring
from pymongo.monitoring import CommandListener

from tests import factories as f


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


def test_everything_pages_hold_every_record_once_newest_first(fhir):
    """patient-operation-everything.html: every record of the compartment, once."""
    pid, ids = _records(fhir)
    got = _all(fhir, f"Patient/{pid}/$everything?_count=5")
    assert got[0]["resourceType"] == "Patient"
    obs = [r["id"] for r in got if r["resourceType"] == "Observation"]
    assert sorted(obs) == sorted(ids) and len(obs) == len(set(obs))
    assert obs == _expected(fhir, pid, descending=True)


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
