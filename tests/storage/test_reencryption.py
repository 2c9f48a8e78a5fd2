"""Re-encryption under a new data key while serving, and the one-time encryption of
values an older version stored in clear (storage/reencryption.py).

Issue basis: PIPL article 51 (encryption); NIST SP 800-57 part 1 section 6.1.1 (key
hierarchy) and 5.3 (cryptoperiods: a data key is replaced and what it encrypted is
encrypted again, the old key kept for data that still needs it).
"""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from pymongo import MongoClient
from stdnum.iso7064 import mod_11_2

from fhirserver.cli import main
from fhirserver.crypto.data_keys import ACTIVE, DATA_KEYS
from fhirserver.search.extract import extract
from fhirserver.search.keys import keys_of
from fhirserver.storage.protection import DATA_KEYS_FIELD
from fhirserver.storage.stored_form import resource_of
from tests.conftest import FhirClient, make_app, mint

RID = "https://fhirserver.example/sid/resident-id"


def rid(body: str) -> str:
    """A GB 11643 number: 17 digits and their ISO 7064 MOD 11-2 check character."""
    return body + mod_11_2.calc_check_digit(body)


NUMBERS = [rid("11010519491231002"), rid("11010519500101003"), rid("11010519900307123")]
PHONES = ["13800138000", "13900139000", "13700137000"]


def person(number: str, phone: str, born: str, gender: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": RID, "value": number}],
            "telecom": [{"system": "phone", "value": phone}], "name": [{"family": "Wang"}],
            "birthDate": born, "gender": gender}


PEOPLE = [person(NUMBERS[0], PHONES[0], "1949-12-31", "female"),
          person(NUMBERS[1], PHONES[1], "1950-01-01", "male"),
          person(NUMBERS[2], PHONES[2], "1990-03-07", "male")]


def load(fhir: FhirClient) -> list[str]:
    ids = [fhir.create(p)["id"] for p in PEOPLE]
    first = fhir.get(f"Patient/{ids[0]}").get_json()
    first["name"] = [{"family": "Wang", "given": ["Fang"]}]
    assert fhir.put(f"Patient/{ids[0]}", first).status_code == 200  # a second version
    assert fhir.post(f"Patient/{ids[1]}/$issue-card", None).status_code in (200, 201)
    return ids


def raw_documents(db: Any) -> str:
    return " ".join(str(d) for name in ("Patient", "Patient_history", "_identifier_claims",
                                         "_health_cards") for d in db[name].find({}))


def searchable(fhir: FhirClient, ids: list[str]) -> None:
    for rid, number, phone in zip(ids, NUMBERS, PHONES, strict=True):
        for query in (f"identifier={RID}|{number}", f"phone={phone}"):
            found = fhir.get(f"Patient?{query}").get_json()
            assert [e["resource"]["id"] for e in found.get("entry", [])] == [rid], query
        read = fhir.get(f"Patient/{rid}").get_json()
        assert read["identifier"][0]["value"] == number and read["telecom"][0]["value"] == phone


def test_rotation_reencrypts_everything_under_the_new_key_and_keeps_the_old_one(app):
    fhir = FhirClient(app.test_client())
    fhir.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {mint(app)}"
    ids = load(fhir)
    repo = app.extensions["fhirserver"].repo
    ring = repo.protection.cipher.ring
    first = ring.active()[0]
    second = ring.rotate()
    # Written after the rotation: under the new key already.
    fourth = fhir.create(person(rid("11010520000101001"), "13600136000", "2000-01-01", "male"))["id"]
    done = repo.reencryption().run()
    # 3 creates, a PUT and the card identifier's update: 5 versions.
    assert done.changed["Patient"] == 3 and done.changed["Patient_history"] == 5
    assert done.changed["_health_cards"] == 1
    for name in ("Patient", "Patient_history"):
        for doc in repo.db[name].find({}):
            assert doc[DATA_KEYS_FIELD] == [second], (name, doc["_id"])
    card = repo.db["_health_cards"].find_one({"number": {"$exists": True}})
    assert repo.protection.cipher.kid_of(card["number"]) == second
    assert {d["_id"] for d in repo.db[DATA_KEYS].find({"_id": {"$ne": ACTIVE}})} == {first, second}
    searchable(fhir, ids)
    assert fhir.get(f"Patient/{fourth}").status_code == 200
    # A second pass finds nothing left to do.
    assert repo.reencryption().run().total == 0


def test_values_an_older_version_kept_in_clear_are_encrypted_at_the_next_start(settings):
    app = make_app(settings)
    fhir = FhirClient(app.test_client())
    fhir.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {mint(app)}"
    ids = load(fhir)
    repo = app.extensions["fhirserver"].repo
    db, protection = repo.db, repo.protection
    # Put the database back in the form an older version wrote: values, search values,
    # claims and card numbers in clear, no data key ids, no migration marker.
    for name in ("Patient", "Patient_history"):
        for doc in db[name].find({}):
            res = protection.opened(resource_of(doc["res"]), doc)
            change: dict[str, Any] = {"res": res}
            if name == "Patient":
                sp = extract(res, repo.tz)
                change |= {"sp": sp, "k": keys_of("Patient", sp),
                           "cl": [f"{i['system']}|{i['value']}" for i in res["identifier"]]}
            db[name].update_one({"_id": doc["_id"]}, {"$set": change,
                                                      "$unset": {DATA_KEYS_FIELD: ""}})
    db["_identifier_claims"].delete_many({})
    for holder in db["Patient"].find({}):
        for key in holder["cl"]:
            db["_identifier_claims"].insert_one({"_id": key, "rid": holder["_id"]})
    for card in db["_health_cards"].find({"number": {"$exists": True}}):
        number = protection.cipher.decrypt(card["number"], "_health_cards/number",
                                           owner=f"_health_cards/{card['_id']}")
        db["_health_cards"].update_one({"_id": card["_id"]}, {"$set": {"number": number}})
    db["_schema"].delete_one({"_id": "field-encryption"})
    assert NUMBERS[0] in raw_documents(db) and PHONES[0] in raw_documents(db)
    repo.close()
    # An operator command leaves the long pass to serve (which shows its progress):
    # run beside servers of the older version, it must not change what they read.
    env = {"MONGODB_URI": settings.mongodb_uri, "MONGODB_DB": settings.mongodb_db,
           "FHIR_DATA_DIR": str(settings.data_dir), "FHIR_MASTER_KEY": None,
           "FERRETDB_POSTGRESQL_URL": settings.ferretdb_postgresql_url}
    minted = CliRunner().invoke(main, ["token", "--operator", "--scope", "system/*.rs"], env=env)
    assert minted.exit_code == 0, minted.output
    with MongoClient(settings.mongodb_uri) as client:
        after = client[settings.mongodb_db]
        assert NUMBERS[0] in raw_documents(after)
        assert after["_schema"].find_one({"_id": "field-encryption"}) is None

    restarted = make_app(settings)
    fhir = FhirClient(restarted.test_client())
    fhir.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {mint(restarted)}"
    text = raw_documents(restarted.extensions["fhirserver"].repo.db)
    assert not any(v in text for v in [*NUMBERS, *PHONES])
    searchable(fhir, ids)
    # The re-keyed claims still hold the numbers: a second holder is refused.
    again = fhir.post("Patient", PEOPLE[2])
    assert again.status_code == 409, again.get_json()


def test_keys_rotate_data_command_reencrypts_with_progress(app):
    fhir = FhirClient(app.test_client())
    fhir.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {mint(app)}"
    load(fhir)
    st = app.extensions["fhirserver"]
    before = st.repo.protection.cipher.ring.active()[0]
    env = {"MONGODB_URI": st.settings.mongodb_uri, "MONGODB_DB": st.settings.mongodb_db,
           "FHIR_DATA_DIR": str(st.settings.data_dir), "FHIR_MASTER_KEY": None,
           "FERRETDB_POSTGRESQL_URL": st.settings.ferretdb_postgresql_url}
    result = CliRunner().invoke(main, ["keys", "rotate-data"], env=env)
    assert result.exit_code == 0, result.output
    after = st.repo.db[DATA_KEYS].find_one({"_id": ACTIVE})["kid"]
    assert after != before and f"new data key {after}" in result.output
    assert "Patient_history" in result.output and f"re-encrypted under data key {after}" in result.output
    assert {d[DATA_KEYS_FIELD][0] for d in st.repo.db["Patient"].find({})} == {after}


def test_a_new_database_filled_by_import_needs_no_encryption_pass_at_serve(settings, tmp_path):
    """A database this version created holds nothing in clear (every write encrypts on
    the way in), so the first ``serve`` after a large import must not scan it all for
    values stored in clear: ``fhirserver import`` into a new database leaves it marked."""
    import json

    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {**p, "id": f"p{i}"}} for i, p in enumerate(PEOPLE)]}
    path = tmp_path / "people.json"
    path.write_text(json.dumps(bundle))
    env = {"MONGODB_URI": settings.mongodb_uri, "MONGODB_DB": settings.mongodb_db,
           "FHIR_DATA_DIR": str(settings.data_dir), "FHIR_MASTER_KEY": None,
           "FERRETDB_POSTGRESQL_URL": settings.ferretdb_postgresql_url}
    result = CliRunner().invoke(main, ["import", str(path)], env=env)
    assert result.exit_code == 0, result.output
    with MongoClient(settings.mongodb_uri) as client:
        db = client[settings.mongodb_db]
        assert db["Patient"].count_documents({}) == 3
        assert db["_schema"].find_one({"_id": "field-encryption"}) is not None
        assert not any(v in raw_documents(db) for v in [*NUMBERS, *PHONES])


def test_a_database_holding_only_a_clear_claim_is_not_marked_encrypted(settings):
    """Only an empty database is marked as needing no one-time pass: an identifier
    claim an older version kept in clear (its resource gone, say, by a create cut
    short) is encrypted at the next start like any other clear value."""
    key = f"{RID}|{NUMBERS[0]}"
    with MongoClient(settings.mongodb_uri) as client:
        client[settings.mongodb_db]["_identifier_claims"].insert_one({"_id": key, "rid": "gone"})
    app = make_app(settings)
    try:
        db = app.extensions["fhirserver"].repo.db
        assert db["_schema"].find_one({"_id": "field-encryption"}) is not None
        assert NUMBERS[0] not in raw_documents(db)
    finally:
        app.extensions["fhirserver"].repo.close()
