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

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from ..config import Settings
from .ferretdb import EmbeddedFerretDB, FerretDBError, private_directory, private_file
from .postgres import EmbeddedPostgres

STATE_FILE = "ferretdb.json"
LOCK_FILE = "embedded.lock"
#: How long a command waits for the owner's database to answer.
OWNER_TIMEOUT = 120.0


class EmbeddedDatabase:
    """PostgreSQL and the FerretDB in front of it, started and stopped together."""

    def __init__(self, data_dir: Path, ferretdb_bin: str | None = None,
                 durable: bool = True) -> None:
        self.data_dir = Path(data_dir)
        private_directory(self.data_dir)
        self.postgres = EmbeddedPostgres(self.data_dir / "postgresql", durable=durable)
        self.ferretdb = EmbeddedFerretDB(self.data_dir / "ferretdb", self.postgres.url,
                                         binary=ferretdb_bin,
                                         socket=self.postgres.socket_dir / "ferretdb.sock")

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


def _wait_running(data_dir: Path, timeout: float) -> tuple[str, str]:
    """The address of the embedded database another process owns, once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        running = _running(data_dir)
        if running:
            return running
        if time.monotonic() > deadline:
            raise FerretDBError(
                f"another process holds the embedded database in {data_dir} "
                f"(see {LOCK_FILE}) but it did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def _wait_lock(lock: Any, data_dir: Path, timeout: float) -> None:
    """Hold ``lock`` once the process that holds it lets go (it is stopping)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                raise FerretDBError(
                    f"another server holds the embedded database in {data_dir} "
                    f"(see {LOCK_FILE}) and did not stop within {timeout:.0f} s") from None
            time.sleep(0.2)


@contextmanager
def database(settings: Settings, own: bool = False) -> Iterator[Settings]:
    """Settings whose ``mongodb_uri`` points at a live database for the block's duration.

    One process owns the embedded database of a data directory: the one holding the
    lock file's ``flock`` (released by the kernel however that process ends). Any
    other command on the directory uses the owner's instance, waiting while it
    starts or is slow, and never starts or stops a second one on the same files.
    ``own``: the caller outlives any other command (a server), so it waits for the
    owner to stop instead: a server restarted while the old one still shuts down
    would otherwise use the old one's database, and lose it a moment later."""
    if settings.mongodb_uri:
        yield settings
        return
    data_dir = Path(settings.data_dir)
    private_directory(data_dir)
    lock = private_file(data_dir / LOCK_FILE, "ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if own:
            _wait_lock(lock, data_dir, OWNER_TIMEOUT)
        else:
            lock.close()
            uri, pg_url = _wait_running(data_dir, OWNER_TIMEOUT)
            yield settings.with_(mongodb_uri=uri, ferretdb_postgresql_url=pg_url, embedded=True)
            return
    state = data_dir / STATE_FILE
    try:
        server = EmbeddedDatabase(data_dir, settings.ferretdb_bin or None)
        uri = server.start()
        try:
            with private_file(state, "w") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "uri": uri,
                                     "postgresql_url": server.postgresql_url}))
            yield settings.with_(mongodb_uri=uri, ferretdb_postgresql_url=server.postgresql_url,
                                 embedded=True)
        finally:
            state.unlink(missing_ok=True)
            server.stop()
    finally:
        lock.close()
