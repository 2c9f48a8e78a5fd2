"""Consent (DESIGN.md section 1), as data."""

from __future__ import annotations

import pytest

from fhirserver.auth.consent import Choice, allowed, condition


@pytest.mark.parametrize(("choice", "sensitive", "writer", "reader", "ok"), [
    (None, True, "O/a", "O/b", True),
    (Choice(restrict_sensitive=True), False, "O/a", "O/b", True),
    (Choice(restrict_sensitive=True), True, "O/a", "O/b", False),
    (Choice(restrict_sensitive=True), True, "O/a", "O/a", True),
    (Choice(opt_out=True), False, "O/a", "O/b", False),
    (Choice(opt_out=True), False, "O/a", "O/a", True),
    (Choice(opt_out=True), False, None, None, False),  # unknown writer: not shared
])
def test_allowed(choice, sensitive, writer, reader, ok) -> None:
    assert allowed(choice, sensitive, writer, reader) is ok


def test_condition_only_when_someone_chose() -> None:
    assert condition({"p1": Choice()}, "O/a") is None
    cond = condition({"p1": Choice(restrict_sensitive=True), "p2": Choice(opt_out=True)}, "O/a")
    assert cond == {"$or": [
        {"pat": {"$nin": ["p1", "p2"]}},
        {"$and": [{"pat": {"$in": ["p1"]}}, {"$or": [{"sens": {"$ne": True}}, {"org": "O/a"}]}]},
        {"$and": [{"pat": {"$in": ["p2"]}}, {"org": "O/a"}]},
    ]}
