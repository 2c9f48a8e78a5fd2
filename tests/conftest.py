"""Shared fixtures.

Database: tests run against a real MongoDB wire-protocol server. ``MONGODB_URI``
points them at an existing MongoDB; otherwise one embedded FerretDB, with its files
in a temporary directory, serves the whole session. Each test gets a database of
its own, so tests never see each other's data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient

from fhirserver.storage.embedded import EmbeddedDatabase

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from fhirserver.config import Settings


@pytest.fixture(scope="session")
def database_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """URI of the MongoDB-compatible server the tests use, and the URL of the
    PostgreSQL database under it when it is the embedded one."""
    external = os.environ.get("MONGODB_URI")
    if external:
        yield external, os.environ.get("FERRETDB_POSTGRESQL_URL", "")
        return
    data_dir: Path = tmp_path_factory.mktemp("database")
    with EmbeddedDatabase(data_dir, durable=False) as server:
        yield server.uri, server.postgresql_url


@pytest.fixture(scope="session")
def mongo_uri(database_server: tuple[str, str]) -> str:
    return database_server[0]


@pytest.fixture
def db_name(mongo_uri: str) -> Iterator[str]:
    """A database name no other test uses; the database is dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    # Cleanup must not hide the test's own result.
    with contextlib.suppress(Exception):
        client: MongoClient[dict[str, object]]
        with MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(name)


# -- the application -----------------------------------------------------------------

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED.exists():  # a checkout laid out elsewhere: SHARED_DATA points at shared/data
    SHARED = Path(os.environ.get("SHARED_DATA", "../shared/data")).resolve()


@pytest.fixture
def settings(database_server: tuple[str, str], db_name: str, tmp_path: Path) -> "Settings":
    from fhirserver.config import Settings

    uri, pg_url = database_server
    return Settings(mongodb_uri=uri, mongodb_db=db_name, data_dir=tmp_path,
                    ferretdb_postgresql_url=pg_url, base_url="http://fhir.test/fhir")


OPERATOR_SCOPE = "system/*.cruds"


def mint(application: "Flask", kind: str = "operator", scope: str = OPERATOR_SCOPE,
         lifetime: int = 3600, **context: str | None) -> str:
    """An access token for ``application``, as ``fhirserver token`` mints one."""
    from datetime import UTC, datetime

    from fhirserver.auth.tokens import TokenService
    from fhirserver.crypto.master import load
    from fhirserver.crypto.sealing import sealer

    st = application.extensions["fhirserver"]
    service = TokenService(st.repo.db, st.settings.issuer, sealer(load(st.settings)))
    token, _ = service.mint(subject=context.pop("subject", None) or f"test-{kind}", scope=scope,
                            kind=kind, lifetime=lifetime, now=datetime.now(UTC), **context)
    return token


def authorised_client_class(token: str) -> type:
    """Test clients that send ``token`` unless a request names its own Authorization."""
    from flask.testing import FlaskClient

    class Client(FlaskClient):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"

    return Client


def make_app(settings: "Settings") -> "Flask":
    """The app under test; its test clients carry an operator token (tests of the
    access policy make their own clients and tokens)."""
    from fhirserver import create_app

    application = create_app(settings)
    application.config["TESTING"] = True
    application.test_client_class = authorised_client_class(mint(application))
    return application


@pytest.fixture
def app(settings: "Settings") -> Iterator["Flask"]:
    application = make_app(settings)
    yield application
    application.extensions["fhirserver"].repo.close()


@pytest.fixture
def live(settings: "Settings") -> Iterator[tuple[str, "Flask"]]:
    """The app on a real loopback port, its issuer and base URL being that address:
    for tests that must go over real HTTP (browsers, third-party clients, the
    attacks of the trust tests)."""
    import threading

    from werkzeug.serving import make_server

    from fhirserver.storage.ferretdb import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    application = make_app(settings.with_(base_url=url))
    server = make_server("127.0.0.1", port, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url, application
    server.shutdown()
    application.extensions["fhirserver"].repo.close()


class Http:
    """Requests over real HTTP to a live server, carrying one caller's token."""

    def __init__(self, url: str, token: str | None = None) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: object = None, **kw: object):  # type: ignore[no-untyped-def]
        headers = dict(kw.pop("headers", None) or {})  # type: ignore[call-overload]
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/fhir+json")
        kw.setdefault("timeout", 30)
        return self.session.request(method, f"{self.url}/{path.lstrip('/')}", data=body,
                                    headers=headers, **kw)  # type: ignore[arg-type]

    def get(self, path: str, **kw: object):  # type: ignore[no-untyped-def]
        return self.call("GET", path, **kw)

    def post(self, path: str, body: object = None, **kw: object):  # type: ignore[no-untyped-def]
        return self.call("POST", path, body, **kw)

    def put(self, path: str, body: object, **kw: object):  # type: ignore[no-untyped-def]
        return self.call("PUT", path, body, **kw)

    def delete(self, path: str, **kw: object):  # type: ignore[no-untyped-def]
        return self.call("DELETE", path, **kw)

    def ids(self, path: str) -> list[str]:
        r = self.get(path)
        assert r.status_code == 200, r.text
        return [e["resource"]["id"] for e in r.json().get("entry", [])
                if e.get("search", {}).get("mode") in ("match", "include")]


def http_as(live: tuple[str, "Flask"], kind: str = "operator", scope: str = OPERATOR_SCOPE,
            **context: str | None) -> Http:
    """An :class:`Http` client for a caller of ``kind`` on the live server."""
    url, application = live
    return Http(url, mint(application, kind, scope, **context))


@pytest.fixture
def client(app: "Flask") -> "FlaskClient":
    return app.test_client()


@pytest.fixture
def fhir(client: "FlaskClient") -> "FhirClient":
    return FhirClient(client)


class FhirClient:
    """A thin helper over the Flask test client that speaks FHIR JSON."""

    def __init__(self, client: "FlaskClient") -> None:
        self.client = client

    def _call(self, method: str, url: str, body: object = None, headers: dict[str, str] | None = None,
              content_type: str = "application/fhir+json") -> "TestResponse":
        url = "/" + url.lstrip("/")
        h = dict(headers or {})
        kwargs: dict[str, object] = {"headers": h}
        if body is not None:
            kwargs["data"] = body if isinstance(body, (bytes, str)) else json.dumps(body)
            kwargs["content_type"] = content_type
        return self.client.open(url, method=method, **kwargs)

    def get(self, url: str, **kw: object) -> "TestResponse":
        return self._call("GET", url, **kw)  # type: ignore[arg-type]

    def post(self, url: str, body: object, **kw: object) -> "TestResponse":
        return self._call("POST", url, body, **kw)  # type: ignore[arg-type]

    def put(self, url: str, body: object, **kw: object) -> "TestResponse":
        return self._call("PUT", url, body, **kw)  # type: ignore[arg-type]

    def patch(self, url: str, body: object, **kw: object) -> "TestResponse":
        kw.setdefault("content_type", "application/json-patch+json")
        return self._call("PATCH", url, body, **kw)  # type: ignore[arg-type]

    def delete(self, url: str, **kw: object) -> "TestResponse":
        return self._call("DELETE", url, **kw)  # type: ignore[arg-type]

    def create(self, resource: dict) -> dict:
        r = self.post(resource["resourceType"], resource)
        assert r.status_code == 201, r.get_json()
        return r.get_json()

