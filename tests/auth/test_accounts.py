"""Accounts and clients at rest: the password rules (NIST SP 800-63B section
3.1.1.2: a minimum length, any characters, no composition rules), who holds a token
for revocation, and a disabled account or client staying disabled when replaced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pymongo import MongoClient

from fhirserver.auth import clients, users
from fhirserver.auth.tokens import holders


@pytest.fixture
def db(mongo_uri: str, db_name: str) -> Iterator[object]:
    client: MongoClient[dict[str, object]] = MongoClient(mongo_uri)
    yield client[db_name]
    client.close()


@pytest.mark.parametrize(("username", "password", "problem"), [
    ("alice", "eleven char", "at least 12 characters"),
    ("alice", " " * 20, "only spaces"),
    ("alice", "x" * (users.MAX_PASSWORD + 1), "at most 1024"),
    ("alice", "my name is ALICE!", "must not contain the user name"),
    ("li", "li li li li li", None),  # a two-letter name is no clue to a 14-character password
    ("alice", "correct horse battery", None),  # passphrases, spaces and all
    ("alice", "ünïcödé pässwörd", None),
    ("alice", "a" * 12, None),
])
def test_password_rules(username: str, password: str, problem: str | None) -> None:
    found = users.password_problem(username, password)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_holders_name_the_account_and_the_client() -> None:
    """A user's or patient's token is held by its account (sub) and its client; a
    backend token by its client only."""
    assert holders({"kind": "patient", "sub": "alice", "client_id": "app-1"}) == [
        "user|alice", "client|app-1"]
    assert holders({"kind": "user", "sub": "dr-li", "client_id": "app-1"}) == [
        "user|dr-li", "client|app-1"]
    assert holders({"kind": "system", "sub": "ehr-1", "client_id": "ehr-1"}) == ["client|ehr-1"]


def test_a_disabled_account_signs_in_no_more_and_stays_disabled_when_replaced(db) -> None:
    users.add(db, users.User("alice", "patient", "Patient/p1"), "correct horse battery")
    created = users.find(db, "alice").created
    assert created is not None
    users.set_disabled(db, "alice", True)
    with pytest.raises(users.LoginFailed, match="Unknown user name or wrong password"):
        users.login(db, "alice", "correct horse battery")  # the message of a wrong password
    assert users.active(db, "alice") is None
    # A new password (as after a compromise) does not enable the account by itself.
    users.add(db, users.User("alice", "patient", "Patient/p1"), "a brand new passphrase")
    again = users.find(db, "alice")
    assert again.disabled and again.created == created
    users.set_disabled(db, "alice", False)
    assert users.login(db, "alice", "a brand new passphrase").username == "alice"
    assert users.active(db, "alice", "Patient/p2") is None  # not the identity a grant names


def test_a_disabled_client_stays_disabled_when_registered_again(db) -> None:
    clients.register(db, clients.Client("ehr-1", "confidential", "system/*.rs"), "s3cret-value")
    clients.set_disabled(db, "ehr-1", True)
    clients.register(db, clients.Client("ehr-1", "confidential", "system/*.rs"), "new-secret")
    assert clients.find(db, "ehr-1").disabled
    with pytest.raises(clients.OAuthError) as refused:
        clients.enabled(clients.find(db, "ehr-1"))
    assert refused.value.error == "invalid_client" and refused.value.status == 401


def test_workers_registering_one_new_client_at_once_all_succeed(db) -> None:
    """Each worker of a server registers the built-in app client as it boots: the
    simultaneous first registrations must neither fail nor leave two clients."""
    ids = [f"app-{n}" for n in range(10)]

    def boot(barrier: threading.Barrier) -> None:
        for client_id in ids:
            barrier.wait(timeout=60)
            clients.register(db, clients.Client(client_id, "public", "openid",
                                                ("http://127.0.0.1/app/",)))

    barrier = threading.Barrier(4)
    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(boot, barrier) for _ in range(4)]:
            done.result()
    assert [c.client_id for c in clients.every(db) if c.client_id in ids] == ids
    assert not any(clients.find(db, i).disabled for i in ids)
