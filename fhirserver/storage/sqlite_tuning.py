"""An index FerretDB's SQLite backend needs but does not create.

FerretDB 1.x pushes a filter on ``_id`` down to SQLite as
``_ferretdb_sjson->'$._id' = ?``, while the unique index it creates for ``_id`` is
on ``_ferretdb_sjson->"_id"``. SQLite only uses an expression index for the very
same expression, so every read, update and upsert by id scans the whole table:
about 100 ms a request once a collection holds a few thousand resources. Adding an
index on the expression FerretDB actually queries makes those lookups a few
milliseconds. The index is plain SQLite schema: FerretDB ignores it otherwise, and
dropping a collection drops it with the table.

This applies to the embedded database and to any FerretDB on SQLite whose files
this process can reach (``FERRETDB_SQLITE_DIR``); MongoDB needs nothing of it.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

ID_EXPRESSION = "_ferretdb_sjson->'$._id'"
BUSY_TIMEOUT_S = 30.0


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def add_id_lookup_indexes(sqlite_dir: Path, db_name: str) -> int:
    """Index the ``_id`` expression of every collection of ``db_name``; return how many were new.

    Safe to call repeatedly and while FerretDB is serving the file: SQLite's own
    locking orders the schema change against FerretDB's writes.
    """
    path = Path(sqlite_dir) / f"{db_name}.sqlite"
    if not path.is_file():
        return 0
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as con:
        try:
            tables = [row[0] for row in con.execute("SELECT table_name FROM _ferretdb_collections")]
        except sqlite3.OperationalError:  # not a FerretDB database
            return 0
        existing = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        created = 0
        for table in tables:
            index = f"{table}_id_lookup"
            if index in existing:
                continue
            con.execute(
                f"CREATE INDEX IF NOT EXISTS {_quoted(index)} ON {_quoted(table)} ({ID_EXPRESSION})"
            )
            created += 1
        con.commit()
    return created
