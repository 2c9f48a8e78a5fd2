"""The demo's accounts (``serve --demo``): the web app can be tried at once with a
clinician who treats one demo patient and patients who each hold a health card, one
of them bound to another's (the family switch), with passwords new at every start."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from fhirserver.auth import users
from fhirserver.auth.access import Access
from fhirserver.auth.policy import Caller
from fhirserver.cli import DEMO_DIR, run_import
from fhirserver.demo.accounts import CLINICIAN, create
from fhirserver.storage.repository import Repository


def test_demo_accounts_sign_in_and_reach_their_patients(settings):
    run_import(settings, sorted(DEMO_DIR.glob("*.json.gz")))
    first = create(settings)
    again = create(settings)
    assert [a.username for a in first] == [a.username for a in again]
    assert len(first) == 4 and first[0].username == CLINICIAN
    repo = Repository.from_settings(settings, initialise=False)
    db = repo.db
    try:
        for account in first:  # the passwords of the earlier start no longer work
            with pytest.raises(users.LoginFailed):
                users.login(db, account.username, account.password)
        for account in again:
            assert users.login(db, account.username, account.password).fhir_user == account.who
        now = datetime.now(UTC)
        doctor = Access(Caller("user", (), CLINICIAN, practitioner=f"Practitioner/{CLINICIAN}"), db, now)
        assert len(doctor.reachable() or ()) == 1
        holder = again[1]
        me = holder.who.removeprefix("Patient/")
        mine = Access(Caller("patient", (), holder.username, patient=me), db, now).reachable()
        assert mine == {me, again[2].who.removeprefix("Patient/")}
    finally:
        repo.close()


def test_demo_accounts_leave_other_patients_and_accounts_alone(settings, tmp_path):
    """``serve --demo`` on a database with real patients gives only the demo's own
    patients an account: a real patient gets no printed password, card binding or
    demo clinician on their care team, and a real account of a demo name (here the
    first demo patient's) is not taken over."""
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "0000-real", "name": [{"given": ["Real"], "family": "Person"}]},
         "request": {"method": "PUT", "url": "Patient/0000-real"}}]}))
    run_import(settings, [real, *sorted(DEMO_DIR.glob("*.json.gz"))])
    repo = Repository.from_settings(settings, initialise=False)
    db = repo.db
    try:
        users.add(db, users.User("antonio", "patient", "Patient/0000-real"), "a-long-real-password-1")
        made = create(settings)
        assert all(a.who != "Patient/0000-real" for a in made)
        assert "antonio" not in [a.username for a in made]
        assert users.login(db, "antonio", "a-long-real-password-1").fhir_user == "Patient/0000-real"
        assert users.find(db, "real") is None
        now = datetime.now(UTC)
        doctor = Access(Caller("user", (), CLINICIAN, practitioner=f"Practitioner/{CLINICIAN}"), db, now)
        assert "0000-real" not in (doctor.reachable() or ())
        mine = Access(Caller("patient", (), "antonio", patient="0000-real"), db, now).reachable()
        assert mine == {"0000-real"}
    finally:
        repo.close()
