"""Secrets kept in the database are sealed under a master key kept outside it
(DESIGN.md section 1: a stolen database dump should not reveal who the patients are,
nor let its thief mint tokens or card codes): the RS256 private keys (RFC 7517
members ``d``, ``p``, ``q``, ``dp``, ``dq``, ``qi``) and the card-code HMAC key
(RFC 7518 section 3.2) are AES-256-GCM sealed values, in the documents and in the
rows of the embedded PostgreSQL database, as a dump of it shows them, alike."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhirserver.auth.tokens import KEYS, TokenService
from fhirserver.cli import main
from fhirserver.crypto import WrongMasterKey
from fhirserver.crypto.master import MasterKey, load
from fhirserver.crypto.sealing import is_sealed, sealer
from fhirserver.interactions.context import Context
from fhirserver.mpi.cards import SECRETS, signing_secret
from tests.conftest import Http, make_app, mint

PRIVATE = ("d", "p", "q", "dp", "dq", "qi")
CARD_KEY = "card-signing-key"


def card_secret(live) -> str:
    url, app = live
    st = app.extensions["fhirserver"]
    return signing_secret(Context(st.repo, st.settings, url))


def env_of(live, **extra: str) -> dict[str, str]:
    """The environment of an operator's command run against the live server."""
    url, app = live
    s = app.extensions["fhirserver"].settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FHIR_", "MONGODB_"))}
    env.update({"MONGODB_URI": s.mongodb_uri, "MONGODB_DB": s.mongodb_db,
                "FHIR_DATA_DIR": str(s.data_dir), "FHIR_BASE_URL": url, **extra})
    return env


def test_the_database_holds_no_private_key_or_card_key_in_clear(live, database_server):
    url, app = live
    st = app.extensions["fhirserver"]
    secret = card_secret(live)
    seal = sealer(load(st.settings))
    docs = list(st.repo.db[KEYS].find({}))
    assert docs
    private: list[str] = []
    for doc in docs:
        assert is_sealed(doc["jwk"]) and not set(PRIVATE) & set(doc["jwk"])
        opened = seal.open_json(doc["jwk"], f"{KEYS}/{doc['_id']}/jwk")
        private += [opened[m] for m in PRIVATE]
    stored = st.repo.db[SECRETS].find_one({"_id": CARD_KEY})
    assert is_sealed(stored["value"])
    raw = repr(docs) + repr(stored)
    assert not [v for v in [*private, secret] if v in raw]
    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("MONGODB_URI: no embedded PostgreSQL to dump")
    import psycopg

    with psycopg.connect(pg_url) as conn:
        schema = st.repo.db_name
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,))]
        dump = "".join(
            str(row[0]) for t in tables
            for row in conn.execute(f'SELECT _jsonb::text FROM "{schema}"."{t}"'))  # type: ignore[arg-type]
    assert docs[0]["_id"] in dump  # the documents are there to be read
    assert not [v for v in [*private, secret] if v in dump]


def test_secrets_kept_in_clear_by_an_older_version_are_sealed_in_place(live):
    """A database from before sealing keeps working: a plain private JWK still signs
    valid tokens and the plain card key still signs codes, now sealed."""
    url, app = live
    st = app.extensions["fhirserver"]
    db = st.repo.db
    old = RSAKey.generate_key(2048, parameters={"kid": "legacy", "use": "sig", "alg": "RS256"})
    db[KEYS].insert_one({"_id": "legacy", "jwk": old.as_dict(private=True),
                         "created": datetime.now(UTC) - timedelta(days=1), "retired": False})
    db[SECRETS].delete_one({"_id": CARD_KEY})
    db[SECRETS].insert_one({"_id": CARD_KEY, "value": "a-card-key-from-before"})
    now = int(datetime.now(UTC).timestamp())
    token = jwt.encode({"alg": "RS256", "kid": "legacy"}, {
        "iss": url, "aud": url, "sub": "ops", "iat": now, "exp": now + 300, "jti": "legacy-1",
        "scope": "system/*.rs", "kind": "operator", "client_id": "old"}, old)
    assert Http(url, token).get("Patient").status_code == 200
    stored = db[KEYS].find_one({"_id": "legacy"})["jwk"]
    assert is_sealed(stored) and "d" not in stored
    assert card_secret(live) == "a-card-key-from-before"
    assert is_sealed(db[SECRETS].find_one({"_id": CARD_KEY})["value"])
    assert card_secret(live) == "a-card-key-from-before"  # and opens again


VERIFY = """
import sys
from datetime import UTC, datetime
from fhirserver.auth.tokens import TokenService
from fhirserver.config import Settings
from fhirserver.crypto.master import load
from fhirserver.crypto.sealing import sealer
from fhirserver.storage.repository import Repository
settings = Settings.from_env()
repo = Repository.from_settings(settings)
service = TokenService(repo.db, settings.issuer, sealer(load(settings)))
print(service.verify(sys.stdin.read().strip(), datetime.now(UTC))["sub"])
"""


def test_tokens_verify_across_processes_and_restarts_with_the_same_key_file(live):
    """``fhirserver token`` (another process, the same settings, so the same key
    file) signs tokens the server accepts; a freshly started process opens the
    sealed keys and accepts the server's tokens."""
    url, app = live
    env = env_of(live)
    exe = Path(sys.executable).parent / "fhirserver"
    minted = subprocess.run([str(exe), "token", "--operator", "--scope", "system/*.rs"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert minted.returncode == 0, minted.stderr
    assert Http(url, minted.stdout.strip()).get("Patient").status_code == 200
    ours = mint(app, subject="ops-here")
    checked = subprocess.run([sys.executable, "-c", VERIFY], input=ours, env=env,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "ops-here"


def test_a_wrong_master_key_stops_start_up_with_a_clear_error(live):
    """Decision: a server or command holding another key than the one the database is
    sealed under does not start (WrongMasterKey naming both key ids), rather than
    answer requests with 500s."""
    url, app = live
    st = app.extensions["fhirserver"]
    right = load(st.settings)
    other = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    wrong = MasterKey(base64.urlsafe_b64decode(other + "="), "FHIR_MASTER_KEY")
    with pytest.raises(WrongMasterKey, match=f"sealed under master key {right.kid}.*{wrong.kid}"):
        make_app(st.settings.with_(master_key=other))
    env = {"MONGODB_URI": st.settings.mongodb_uri, "MONGODB_DB": st.settings.mongodb_db,
           "FHIR_DATA_DIR": str(st.settings.data_dir), "FHIR_BASE_URL": url,
           "FHIR_MASTER_KEY": other, "FHIR_MASTER_KEY_FILE": None}
    result = CliRunner().invoke(main, ["token", "--operator", "--scope", "system/*.rs"], env=env)
    assert result.exit_code == 1
    assert "sealed under master key" in result.output and "FHIR_MASTER_KEY" in result.output
    short = CliRunner().invoke(main, ["token", "--operator", "--scope", "system/*.rs"],
                               env={**env, "FHIR_MASTER_KEY": "dG9vIHNob3J0"})
    assert short.exit_code == 1 and "holds 9 bytes" in short.output
    # Even past the start-up check, a sealed key names the key it needs; no 401 guess.
    service = TokenService(st.repo.db, st.settings.issuer, sealer(wrong))
    with pytest.raises(WrongMasterKey):
        service.jwks()
