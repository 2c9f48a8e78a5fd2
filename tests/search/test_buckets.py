"""Month and day buckets (search/buckets.py): the order they are read in is the sort
order (search.html#sort: missing values sort lowest), a cursor resumes in its own
month or day, and only a crowded month whose records all carry days is read by day."""

from __future__ import annotations

from datetime import UTC, datetime

from fhirserver.search.buckets import (
    DAYS,
    DENSE,
    buckets_of,
    by_day,
    is_month,
    month_order,
    registry_docs,
    walk_plan,
)


def test_a_record_is_bucketed_by_the_months_and_days_of_its_earliest_and_latest_date() -> None:
    so = {"date": datetime(2024, 1, 31, 23, tzinfo=UTC), "-date": datetime(2024, 2, 1, 1, tzinfo=UTC)}
    assert buckets_of("Observation", so) == [
        "date<2024-01", "date>2024-02", "date<2024-01-31", "date>2024-02-01"]
    assert buckets_of("Observation", {}) == ["date<-", "date>-"]
    assert buckets_of("Patient", so) == []


def test_registry_documents_name_patient_kind_and_month_and_days_go_under_their_month() -> None:
    docs = registry_docs("Observation", "p1", ["date<2024-01", "date>-", "date>2024-02-01"])
    assert docs == [
        {"_id": "Observation|p1|date<2024-01", "g": "Observation|p1|date<", "m": "2024-01"},
        {"_id": "Observation|p1|date>-", "g": "Observation|p1|date>", "m": "-"},
        {"_id": "Observation|p1|date>2024-02-01", "g": "Observation|p1|date>2024-02",
         "m": "2024-02-01"},
    ]
    assert [is_month(d) for d in docs] == [True, True, False]
    assert registry_docs("Observation", None, ["date<2024-01"]) == []


def test_only_a_crowded_month_whose_records_all_have_days_is_read_by_day() -> None:
    month = {"m": "2024-02", "v": DAYS, "n": DENSE + 1}
    assert by_day(month)
    assert not by_day({**month, "n": DENSE})
    assert not by_day({"m": "2024-02", "n": 10 * DENSE})  # registered before records had days
    assert not by_day({**month, "m": "-"})  # undated records have no day


def test_days_in_sort_order_and_a_cursor_resumes_in_its_own_day_search_sort() -> None:
    days = ["2024-02-03", "2024-02-28", "2024-02-10"]
    assert month_order(days, ascending=False) == ["2024-02-28", "2024-02-10", "2024-02-03"]
    at = datetime(2024, 2, 10, 7, tzinfo=UTC)
    assert month_order(days, False, at, True) == ["2024-02-10", "2024-02-03"]
    assert month_order(days, True, at, True) == ["2024-02-10", "2024-02-28"]


def test_only_date_sorts_that_lead_with_the_bucketed_value_are_walked_search_sort() -> None:
    assert walk_plan("Observation", [("so.-date", -1), ("_id", 1)]) == "date>"
    assert walk_plan("Observation", [("so.date", 1), ("_id", 1)]) == "date<"
    # a previous page: the same months, backwards
    assert walk_plan("Observation", [("so.-date", 1), ("_id", -1)]) == "date>"
    assert walk_plan("Observation", [("so.date", -1), ("_id", -1)]) == "date<"
    assert walk_plan("Observation", [("_id", 1)]) is None
    assert walk_plan("Patient", [("so.-birthdate", -1), ("_id", 1)]) is None


def test_months_in_sort_order_with_undated_records_lowest_search_sort() -> None:
    months = ["2023-12", "-", "2024-02", "2024-01"]
    assert month_order(months, ascending=True) == ["-", "2023-12", "2024-01", "2024-02"]
    assert month_order(months, ascending=False) == ["2024-02", "2024-01", "2023-12", "-"]


def test_a_cursor_resumes_in_its_own_month_http_paging() -> None:
    months = ["2023-12", "-", "2024-02", "2024-01"]
    at = datetime(2024, 1, 15, tzinfo=UTC)
    assert month_order(months, False, at, True) == ["2024-01", "2023-12", "-"]
    assert month_order(months, True, at, True) == ["2024-01", "2024-02"]
    assert month_order(months, True, None, True) == ["-", "2023-12", "2024-01", "2024-02"]
    assert month_order(months, False, None, True) == ["-"]


def test_a_cursor_on_an_undated_record_resumes_at_every_dated_day_search_sort() -> None:
    """Ascending, undated records sort first: after one of them every day of a month
    read by day is still ahead (none is skipped), descending none is."""
    days = ["2024-02-03", "2024-02-10"]
    assert month_order(days, True, None, True) == days
    assert month_order(days, False, None, True) == []


def test_years_before_1000_are_bucketed_padded_and_in_date_order_search_sort() -> None:
    """A FHIR date may be any year from 0001: year 999 sorts before 2024, and its day
    is a day, not a month."""
    so = {"date": datetime(999, 3, 10, tzinfo=UTC), "-date": datetime(999, 3, 10, tzinfo=UTC)}
    buckets = buckets_of("Observation", so)
    assert buckets == ["date<0999-03", "date>0999-03", "date<0999-03-10", "date>0999-03-10"]
    assert [is_month(d) for d in registry_docs("Observation", "p1", buckets)] == \
        [True, True, False, False]
    # "999-03": how a version that wrote years unpadded registered the month.
    assert month_order(["2024-01", "999-03", "0998-12"], True) == ["0998-12", "999-03", "2024-01"]
    assert month_order(["2024-01", "999-03"], False, datetime(999, 3, 1, tzinfo=UTC), True) \
        == ["999-03"]
