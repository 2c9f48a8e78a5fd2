"""A new database is only ever written by this version, in today's shape: ``serve``
after a large ``fhirserver import`` must not read every record again for values an
older version stored in clear, twice or in an older shape (there are none)."""

from __future__ import annotations

from typing import Any

from tests.conftest import make_app


def test_a_new_database_needs_none_of_the_one_time_passes(settings: Any) -> None:
    repo = make_app(settings).extensions["fhirserver"].repo
    pending = {name: getattr(repo, name)() for name in (
        "encryption_pending", "key_copies_pending", "day_buckets_pending",
        "resource_text_pending", "date_keys_pending", "union_values_pending",
        "population_shards_pending")}
    assert not any(pending.values()), pending
    repo.close()
