"""The lock key of conditional criteria (storage/search_claims.py, R4 http.html#ccreate)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import MongoClient

from fhirserver.crypto.fields import Blinder
from fhirserver.storage.search_claims import SearchClaims
from fhirserver.storage.search_claims import criteria_key as keyed_criteria_key


def criteria_key(rtype, items, key=b"k" * 32):  # type: ignore[no-untyped-def]
    return keyed_criteria_key(rtype, items, Blinder(key, lambda s: False).keyed)


def test_claim_key_ignores_parameter_order_and_hides_the_criteria():
    """The lock key is the type and the criteria sorted, hashed: the same criteria in
    another order are the same lock, and no identifier value is stored in clear."""
    k1 = criteria_key("Observation", [("code", "http://loinc.org|1"), ("patient", "Patient/p")])
    k2 = criteria_key("Observation", [("patient", "Patient/p"), ("code", "http://loinc.org|1")])
    assert k1 == k2
    assert criteria_key("Observation", [("code", "a,b")]) == \
        criteria_key("Observation", [("code", "b,a")])
    assert criteria_key("Observation", [("code", "a")]) != criteria_key("Patient", [("code", "a")])
    assert criteria_key("Patient", [("identifier", "s|1"), ("identifier", "s|2")]) != \
        criteria_key("Patient", [("identifier", "s|1,s|2")])
    key = criteria_key("Patient", [("identifier", "urn:sys|123456789")])
    assert "123456789" not in key and len(key) == 64
    # Keyed: without the deployment's key the lock name of a number cannot be
    # computed (and so not guessed by trying every number).
    assert key != criteria_key("Patient", [("identifier", "urn:sys|123456789")], b"x" * 32)



@pytest.fixture
def claims(mongo_uri: str, db_name: str) -> Iterator[SearchClaims]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, tz_aware=True)
    yield SearchClaims(client[db_name]["_search_claims"])
    client.close()


def test_one_holder_at_a_time_and_free_once_released(claims: SearchClaims) -> None:
    first = claims.take("k", "Patient", "a")
    assert first is not None
    assert claims.take("k", "Patient", "b") is None
    claims.release(first)
    assert claims.take("k", "Patient", "b") is not None


def test_a_stale_claim_is_taken_over_by_one_writer_only(claims: SearchClaims) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    claims.collection.insert_one({"_id": "k", "owner": "dead", "rid": "x", "until": past})
    taker = claims.take("k", "Patient", "a")
    assert taker is not None and taker.ticket == "k~dead"
    assert claims.take("k", "Patient", "b") is None  # the new holder's lease is fresh
    assert claims.renew(taker)
    claims.release(taker)
    assert claims.collection.count_documents({}) == 0  # claim and ticket gone


def test_a_ticket_left_by_a_taker_that_died_is_cleared(claims: SearchClaims) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    claims.collection.insert_one({"_id": "k", "owner": "dead", "rid": "x", "until": past})
    claims.collection.insert_one({"_id": "k~dead", "until": past})
    assert claims.take("k", "Patient", "a") is None  # clears the dead taker's ticket
    assert claims.take("k", "Patient", "a") is not None


def test_a_lost_claim_cannot_be_renewed(claims: SearchClaims) -> None:
    held = claims.take("k", "Patient", "a")
    assert held is not None
    claims.collection.update_one({"_id": "k"}, {"$set": {"owner": "other"}})
    assert not claims.renew(held)
