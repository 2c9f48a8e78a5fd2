"""The database a command runs on: MONGODB_URI, else the embedded database.

The embedded database is PostgreSQL (:mod:`.postgres`) behind FerretDB
(:mod:`.ferretdb`), both children of the process that starts them, with their files
in ``data_dir``. `fhirserver serve` records FerretDB's address in
``<data_dir>/ferretdb.json``; another command on the same data directory (an import
while the server runs) uses that running instance rather than starting a second
one on the same cluster. The data directory and everything the server writes there
are readable by the owner only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from ..config import Settings
from .ferretdb import EmbeddedFerretDB, private_directory, private_file
from .postgres import EmbeddedPostgres

STATE_FILE = "ferretdb.json"


class EmbeddedDatabase:
    """PostgreSQL and the FerretDB in front of it, started and stopped together."""

    def __init__(self, data_dir: Path, ferretdb_bin: str | None = None,
                 durable: bool = True) -> None:
        self.data_dir = Path(data_dir)
        private_directory(self.data_dir)
        self.postgres = EmbeddedPostgres(self.data_dir / "postgresql", durable=durable)
        self.ferretdb = EmbeddedFerretDB(self.data_dir / "ferretdb", self.postgres.url,
                                         binary=ferretdb_bin)

    @property
    def uri(self) -> str:
        return self.ferretdb.uri

    @property
    def postgresql_url(self) -> str:
        return self.postgres.url

    def start(self) -> str:
        self.postgres.start()
        try:
            return self.ferretdb.start()
        except BaseException:
            self.postgres.stop()
            raise

    def stop(self) -> None:
        try:
            self.ferretdb.stop()
        finally:
            self.postgres.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _running(data_dir: Path) -> tuple[str, str] | None:
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
        uri, pg_url = str(state["uri"]), str(state["postgresql_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=1000)
    try:
        client.admin.command("ping")
        return uri, pg_url
    except PyMongoError:
        return None
    finally:
        client.close()


@contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings whose ``mongodb_uri`` points at a live database for the block's duration."""
    if settings.mongodb_uri:
        yield settings
        return
    data_dir = Path(settings.data_dir)
    private_directory(data_dir)
    running = _running(data_dir)
    if running:
        uri, pg_url = running
        yield settings.with_(mongodb_uri=uri, ferretdb_postgresql_url=pg_url)
        return
    server = EmbeddedDatabase(data_dir, settings.ferretdb_bin or None)
    uri = server.start()
    state = data_dir / STATE_FILE
    with private_file(state, "w") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "uri": uri,
                             "postgresql_url": server.postgresql_url}))
    try:
        yield settings.with_(mongodb_uri=uri, ferretdb_postgresql_url=server.postgresql_url)
    finally:
        state.unlink(missing_ok=True)
        server.stop()
