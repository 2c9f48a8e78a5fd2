"""The authorization server end to end, over real HTTP, with a client nobody here
wrote: authlib's OAuth2 client with ``private_key_jwt`` (SMART Backend Services,
RFC 7523), ``client_secret_basic`` (RFC 6749 section 2.3.1), introspection
(RFC 7662) and revocation (RFC 7009)."""

from __future__ import annotations

import base64
import time
import uuid

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhirserver.auth.clients import Client, register
from tests import factories as f


class SmartPrivateKeyJWT(PrivateKeyJWT):
    """authlib's private_key_jwt with what SMART Backend Services requires on top:
    an assertion expiring within five minutes (authlib's default is an hour), with a
    fresh jti each time."""

    def sign(self, auth, token_endpoint):  # type: ignore[no-untyped-def]
        self.claims = {"exp": int(time.time()) + 240}
        return super().sign(auth, token_endpoint)


@pytest.fixture
def backend(live) -> tuple[str, RSAKey]:
    url, app = live
    key = RSAKey.generate_key(2048, parameters={"kid": "lab-key-1", "alg": "RS384"})
    register(app.extensions["fhirserver"].repo.db, Client(
        "lab-system", "backend", "system/Observation.crus system/Patient.rs",
        organization="Organization/lab", jwks={"keys": [key.as_dict(private=False)]}))
    return "lab-system", key


def discover(url: str) -> dict:
    r = requests.get(f"{url}/.well-known/smart-configuration", timeout=10)
    assert r.status_code == 200
    return r.json()


def test_discovery_document_smart_app_launch(live):
    url, _ = live
    conf = discover(url)
    assert conf["issuer"] == url
    assert conf["token_endpoint"] == f"{url}/oauth/token"
    assert "private_key_jwt" in conf["token_endpoint_auth_methods_supported"]
    assert conf["code_challenge_methods_supported"] == ["S256"]
    keys = requests.get(conf["jwks_uri"], timeout=10).json()["keys"]
    assert keys and all("kid" in k and "d" not in k for k in keys)  # public halves only
    meta = requests.get(f"{url}/metadata", timeout=10).json()
    security = meta["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


def test_backend_services_with_authlib_private_key_jwt(live, backend):
    url, _ = live
    client_id, key = backend
    conf = discover(url)
    session = OAuth2Session(client_id, key.as_dict(private=True),
                            token_endpoint_auth_method=SmartPrivateKeyJWT(conf["token_endpoint"], alg="RS384"),
                            scope="system/Observation.rs system/Patient.rs system/*.cruds")
    token = session.fetch_token(conf["token_endpoint"], grant_type="client_credentials")
    # Granted: what was asked for and is allowed (system/*.cruds is not).
    assert set(token["scope"].split()) == {"system/Observation.rs", "system/Patient.rs"}
    assert token["token_type"].lower() == "bearer" and token["expires_in"] <= 3600
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    assert requests.get(f"{url}/Patient?identifier=urn:x|1", headers=auth, timeout=10).status_code == 200
    r = requests.post(f"{url}/Observation", json=f.observation(), timeout=10,
                      headers={**auth, "Content-Type": "application/fhir+json"})
    assert r.status_code == 403  # .rs only: no create


def _assertion(client_id: str, key: RSAKey, aud: str, exp_in: int = 240, jti: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in,
              "jti": jti or uuid.uuid4().hex}
    return jwt.encode({"alg": "RS384", "kid": key.kid}, claims, key, algorithms=["RS384"])


def _token(url: str, assertion: str, scope: str = "system/Observation.rs") -> requests.Response:
    return requests.post(f"{url}/oauth/token", timeout=10, data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})


def test_assertion_rules_replay_lifetime_audience_signature(live, backend):
    url, _ = live
    client_id, key = backend
    token_url = f"{url}/oauth/token"
    once = _assertion(client_id, key, token_url)
    assert _token(url, once).status_code == 200
    replay = _token(url, once)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"
    assert "replay" in replay.json()["error_description"]
    too_long = _token(url, _assertion(client_id, key, token_url, exp_in=600))
    assert too_long.status_code == 401 and "five minutes" in too_long.json()["error_description"]
    wrong_aud = _token(url, _assertion(client_id, key, "https://elsewhere/token"))
    assert wrong_aud.status_code == 401
    stranger = RSAKey.generate_key(2048, parameters={"kid": "lab-key-1"})
    forged = _token(url, _assertion(client_id, stranger, token_url))
    assert forged.status_code == 401
    no_scope = _token(url, _assertion(client_id, key, token_url), scope="system/Patient.d")
    assert no_scope.status_code == 400 and no_scope.json()["error"] == "invalid_scope"
    bad_grant = requests.post(token_url, data={"grant_type": "password"}, timeout=10)
    assert bad_grant.status_code == 400 and bad_grant.json()["error"] == "unsupported_grant_type"


def test_client_secret_basic_introspection_and_revocation(live):
    url, app = live
    register(app.extensions["fhirserver"].repo.db,
             Client("ehr-1", "confidential", "system/*.rs", organization="Organization/h"),
             secret="s3cret-value")
    basic = {"Authorization": "Basic " + base64.b64encode(b"ehr-1:s3cret-value").decode()}
    r = requests.post(f"{url}/oauth/token", headers=basic, timeout=10,
                      data={"grant_type": "client_credentials", "scope": "system/Patient.rs"})
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    access = r.json()["access_token"]
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ehr-1:guess").decode()}
    denied = requests.post(f"{url}/oauth/token", headers=wrong, timeout=10,
                           data={"grant_type": "client_credentials", "scope": "system/Patient.rs"})
    assert denied.status_code == 401 and denied.json()["error"] == "invalid_client"

    info = requests.post(f"{url}/oauth/introspect", headers=basic, data={"token": access}, timeout=10).json()
    assert info["active"] is True and info["client_id"] == "ehr-1" and info["scope"] == "system/Patient.rs"
    assert requests.post(f"{url}/oauth/introspect", headers=basic, data={"token": "junk"},
                         timeout=10).json() == {"active": False}

    auth = {"Authorization": f"Bearer {access}"}
    assert requests.get(f"{url}/Patient", headers=auth, timeout=10).status_code == 200
    assert requests.post(f"{url}/oauth/revoke", headers=basic, data={"token": access}, timeout=10).status_code == 200
    after = requests.get(f"{url}/Patient", headers=auth, timeout=10)
    assert after.status_code == 401 and "revoked" in after.json()["issue"][0]["diagnostics"]
    assert requests.post(f"{url}/oauth/introspect", headers=basic, data={"token": access},
                         timeout=10).json() == {"active": False}
