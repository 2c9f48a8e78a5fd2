"""Month buckets (search/buckets.py): the order months are read in is the sort order
(search.html#sort: missing values sort lowest), and a cursor resumes in its own month."""

from __future__ import annotations

from datetime import UTC, datetime

from fhirserver.search.buckets import buckets_of, month_order, registry_docs, walk_plan


def test_a_record_is_bucketed_by_the_months_of_its_earliest_and_latest_date() -> None:
    so = {"date": datetime(2024, 1, 31, 23, tzinfo=UTC), "-date": datetime(2024, 2, 1, 1, tzinfo=UTC)}
    assert buckets_of("Observation", so) == ["date<2024-01", "date>2024-02"]
    assert buckets_of("Observation", {}) == ["date<-", "date>-"]
    assert buckets_of("Patient", so) == []


def test_registry_documents_name_patient_kind_and_month() -> None:
    docs = registry_docs("Observation", "p1", ["date<2024-01", "date>-"])
    assert docs == [
        {"_id": "Observation|p1|date<2024-01", "g": "Observation|p1|date<", "m": "2024-01"},
        {"_id": "Observation|p1|date>-", "g": "Observation|p1|date>", "m": "-"},
    ]
    assert registry_docs("Observation", None, ["date<2024-01"]) == []


def test_only_date_sorts_that_lead_with_the_bucketed_value_are_walked_search_sort() -> None:
    assert walk_plan("Observation", [("so.-date", -1), ("_id", 1)]) == "date>"
    assert walk_plan("Observation", [("so.date", 1), ("_id", 1)]) == "date<"
    assert walk_plan("Observation", [("so.-date", 1), ("_id", -1)]) is None  # a previous page
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
