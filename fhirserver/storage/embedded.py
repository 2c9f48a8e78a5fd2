"""The database a command runs on: MONGODB_URI, else the embedded FerretDB.

`fhirserver serve` without MONGODB_URI starts FerretDB on the data directory and
records its address in ``<data_dir>/ferretdb.json``; another command on the same
data directory (an import while the server runs) uses that running instance rather
than starting a second process on the same SQLite files. The data directory and
everything the server writes there are readable by the owner only (see
:mod:`.ferretdb`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from ..config import Settings
from .ferretdb import EmbeddedFerretDB, private_directory, private_file

STATE_FILE = "ferretdb.json"


def _running(data_dir: Path) -> str | None:
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
        uri = str(state["uri"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    client: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=1000)
    try:
        client.admin.command("ping")
        return uri
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
    sqlite_dir = str(data_dir / "ferretdb")
    uri = _running(data_dir)
    if uri:
        yield settings.with_(mongodb_uri=uri, ferretdb_sqlite_dir=sqlite_dir)
        return
    server = EmbeddedFerretDB(Path(sqlite_dir), binary=settings.ferretdb_bin or None)
    uri = server.start()
    state = data_dir / STATE_FILE
    with private_file(state, "w") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "uri": uri}))
    try:
        yield settings.with_(mongodb_uri=uri, ferretdb_sqlite_dir=sqlite_dir)
    finally:
        state.unlink(missing_ok=True)
        server.stop()
