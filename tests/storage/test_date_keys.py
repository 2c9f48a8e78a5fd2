"""Birth dates keyed by day (search/keys.py): ``Patient?birthdate=D`` and the desk's
``family=F&birthdate=D`` are answered from the index key of day D, with the results
search.html#date gives (``eq``: the search range contains the birth date's range),
and a database an older version wrote, without those keys, finds the same Patients
once ``serve``'s one-time pass has given them (storage/record_passes.py)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from tests import factories as f
from tests.conftest import FhirClient, make_app

BORN = {"day": "1960-03-04", "next-day": "1960-03-05", "month": "1960-03", "year": "1960",
        "other-year": "1961-03-04"}


def _found(fhir: FhirClient, query: str) -> set[str]:
    r = fhir.get(f"Patient?{query}&_count=50")
    assert r.status_code == 200, r.get_data(as_text=True)
    return {e["resource"]["id"] for e in r.get_json().get("entry", [])}


def _searches(fhir: FhirClient, ids: dict[str, str]) -> None:
    """search.html#date: a birth date of day precision is within its day; one of month
    or year precision is within no single day, but within its month and year."""
    expected = {
        "birthdate=1960-03-04": {"day"},
        "family=Zha&birthdate=1960-03-04": {"day"},
        "family=Zha&birthdate=eq1960-03-05": {"next-day"},
        "birthdate=1960-03": {"day", "next-day", "month"},
        "birthdate=1960": {"day", "next-day", "month", "year"},
        "birthdate=1960-03-04,1960-03-05": {"day", "next-day"},
        "birthdate=1960-03-04T00:00": set(),
        "birthdate=ge1961-03-04": {"other-year"},
    }
    for query, names in expected.items():
        assert _found(fhir, query) == {ids[n] for n in names}, query


def _as_an_older_version_stored(repo: Any) -> None:
    """The Patients without their day keys, and the pass not run: an older version's database."""
    patients = repo.db["Patient"]
    for doc in patients.find({}, {"k": 1}):
        patients.update_one({"_id": doc["_id"]},
                            {"$set": {"k": [k for k in doc["k"] if "@" not in k]}})
    repo.db["_schema"].delete_many({"_id": "date-keys"})


def test_birth_dates_of_any_precision_are_found_as_search_date_eq_says_in_the_server_zone(
        settings: Any) -> None:
    """The server's zone (FHIR_TIMEZONE) is far from UTC, where a day's key is the
    UTC instant its local midnight falls on."""
    for zone in ("Asia/Shanghai", "America/Los_Angeles"):
        app = make_app(dataclasses.replace(settings, timezone=zone,
                                           mongodb_db=f"{settings.mongodb_db}_{zone[:4].lower()}"))
        fhir = FhirClient(app.test_client())
        ids = {name: fhir.create(f.patient("Zhang", birthDate=born))["id"]
               for name, born in BORN.items()}
        _searches(fhir, ids)
        app.extensions["fhirserver"].repo.close()


def test_patients_stored_without_day_keys_are_found_after_the_one_time_pass(
        settings: Any) -> None:
    app = make_app(settings)
    fhir = FhirClient(app.test_client())
    ids = {name: fhir.create(f.patient("Zhang", birthDate=born))["id"]
           for name, born in BORN.items()}
    unrelated = fhir.create(f.patient("Zhang"))["id"]  # no birth date: nothing to add
    repo = app.extensions["fhirserver"].repo
    patients = repo.db["Patient"]

    _as_an_older_version_stored(repo)
    assert _found(fhir, "birthdate=1960-03-04") == set()  # the key is what the search reads
    assert _found(fhir, "birthdate=1960-03") == {ids["day"], ids["next-day"], ids["month"]}

    assert repo.date_keys_pending()
    assert repo.add_date_keys() == len(BORN)
    assert not repo.date_keys_pending() and repo.add_date_keys() == 0
    _searches(fhir, ids)
    keyed = [k for k in patients.find_one({"_id": ids["day"]})["k"] if "@" in k]
    assert keyed == ["birthdate@1960-03-03T16:00:00.000"]  # midnight in Asia/Shanghai
    assert not [k for k in patients.find_one({"_id": unrelated})["k"] if re.search("@", k)]
    repo.close()


def test_patients_an_older_version_stored_are_found_by_birth_date_under_the_wsgi_app(
        settings: Any) -> None:
    """search.html#date (``eq``) under `gunicorn wsgi:app`, the README's entry point for
    a process manager of one's own, which never runs ``serve``'s one-time passes: the
    Patients an older version stored are found by ``birthdate=D``, the desk's
    ``family=F&birthdate=D`` and a conditional create on them (http.html#ccreate:
    no second Patient) as soon as a worker answers."""
    old = make_app(settings)
    ids = {name: FhirClient(old.test_client()).create(f.patient("Zhang", birthDate=born))["id"]
           for name, born in BORN.items()}
    _as_an_older_version_stored(old.extensions["fhirserver"].repo)
    old.extensions["fhirserver"].repo.close()

    app = make_app(settings)  # what wsgi.py does in each worker
    fhir = FhirClient(app.test_client())
    _searches(fhir, ids)
    r = fhir.post("Patient", f.patient("Zhang", birthDate="1960-03-04"),
                  headers={"If-None-Exist": "family=Zhang&birthdate=1960-03-04"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json()["id"] == ids["day"]
    app.extensions["fhirserver"].repo.close()


def test_a_birth_date_of_a_day_the_zone_skipped_is_found_by_a_minute_containing_it(
        settings: Any) -> None:
    """search.html#date, ``eq``: the search range contains the target's. Manila skipped
    1844-12-31 (local mean time went from -15:56:08 to +8:03:52), so a birth date of
    that day is the instant that day would have begun, 15:56:08 UTC; the searched
    minute 15:56 UTC contains it, and so does the day, searched as itself."""
    from zoneinfo import ZoneInfo

    from fhirserver.search.dates import parse_range

    zone = "Asia/Manila"
    start = parse_range("1844-12-31", ZoneInfo(zone))
    assert start is not None
    app = make_app(dataclasses.replace(settings, timezone=zone))
    fhir = FhirClient(app.test_client())
    pid = fhir.create(f.patient("Cruz", birthDate="1844-12-31"))["id"]
    minute = start[0].strftime("%Y-%m-%dT%H:%MZ")
    for query in (f"birthdate={minute}", "birthdate=1844-12-31", f"family=Cruz&birthdate={minute}"):
        assert _found(fhir, query) == {pid}, query
    app.extensions["fhirserver"].repo.close()
