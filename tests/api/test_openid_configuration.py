"""OpenID Connect Discovery 1.0 (section 3, provider metadata) at
``/.well-known/openid-configuration``: public like the SMART configuration, which
advertises ``sso-openid-connect``, and true to the ID tokens the server signs
(OpenID Connect Core section 2; SMART App Launch 2.x ``fhirUser``)."""

from __future__ import annotations

from datetime import UTC, datetime

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from fhirserver.api import guard, oauth
from fhirserver.auth import grants

REQUIRED = {"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri",
            "response_types_supported", "subject_types_supported",
            "id_token_signing_alg_values_supported"}


def test_discovery_is_public_and_agrees_with_the_smart_configuration(live):
    url, _ = live
    r = requests.get(f"{url}/.well-known/openid-configuration", timeout=10)  # no token
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    conf = r.json()
    assert REQUIRED <= conf.keys()
    assert conf["issuer"] == url  # Discovery section 4.3: the URL it was fetched under
    assert conf["authorization_endpoint"] == f"{url}/oauth/authorize"
    assert conf["token_endpoint"] == f"{url}/oauth/token"
    assert conf["jwks_uri"] == f"{url}/oauth/jwks"
    assert conf["response_types_supported"] == ["code"]
    assert conf["subject_types_supported"] == ["public"]
    assert conf["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"openid", "fhirUser"} <= set(conf["scopes_supported"])
    assert {"client_secret_basic", "private_key_jwt", "none"} <= set(
        conf["token_endpoint_auth_methods_supported"])
    assert "fhirUser" in conf["claims_supported"]
    assert conf["code_challenge_methods_supported"] == ["S256"]

    smart = requests.get(f"{url}/.well-known/smart-configuration", timeout=10).json()
    assert "sso-openid-connect" in smart["capabilities"]
    for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
        assert conf[key] == smart[key]
    assert set(smart["scopes_supported"]) == set(conf["scopes_supported"])


def test_claims_supported_are_exactly_what_id_tokens_carry():
    grant = grants.Grant("app-1", "bella", "patient", "Patient/p1", "openid fhirUser launch/patient",
                         patient="p1", nonce="n-0S6")
    claims = grants.id_token_claims(grant, "http://fhir.test", datetime.now(UTC), 300)
    assert set(claims) == set(oauth.ID_TOKEN_CLAIMS)


def test_an_id_token_verifies_as_the_discovery_document_says(live):
    url, app = live
    conf = requests.get(f"{url}/.well-known/openid-configuration", timeout=10).json()
    grant = grants.Grant("app-1", "bella", "patient", "Patient/p1", "openid fhirUser", patient="p1")
    with app.app_context():
        token = guard.tokens().sign(grants.id_token_claims(grant, conf["issuer"], datetime.now(UTC), 300))
    keys = KeySet.import_key_set(requests.get(conf["jwks_uri"], timeout=10).json())
    decoded = jwt.decode(token, keys, algorithms=conf["id_token_signing_alg_values_supported"])
    assert decoded.header["alg"] in conf["id_token_signing_alg_values_supported"]
    assert decoded.claims["iss"] == conf["issuer"]
    assert decoded.claims["fhirUser"] == f"{url}/Patient/p1"
    assert set(decoded.claims) <= set(conf["claims_supported"])
