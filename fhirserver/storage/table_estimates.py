"""How many documents a collection holds, from PostgreSQL's statistics.

A search no index answers is refused once its type is large (``FHIR_SCAN_LIMIT``),
and that question is asked on every such search. MongoDB answers
``estimated_document_count`` from collection metadata; FerretDB 1.x counts by
reading every document of the collection (2.5 s for 20,000 Patients, 17 s for
200,000 Observations), so the refusal of a whole-collection read cost what the read
would have. On PostgreSQL the table's ``reltuples`` (kept by ANALYZE and autovacuum)
says the same in a catalog look-up: read for all collections at once, and again
when :data:`MAX_AGE` has passed. A table analysed while empty, or never, is counted
in PostgreSQL (no document decoded); a failure to read the catalog leaves the caller
to ask FerretDB.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)
METADATA_TABLE = "_ferretdb_database_metadata"
#: Seconds an estimate is used before the catalog is read again.
MAX_AGE = 60.0


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_estimates(conn: Any, schema: str) -> dict[str, int]:
    """Documents per collection of FerretDB database ``schema``: as PostgreSQL's
    planner estimates a table's rows, the rows per page its statistics saw times the
    pages it has now (a table grown since its last ANALYZE is not taken for its old
    size); counted exactly for a table analysed empty or never."""
    rows = conn.execute(
        "SELECT m._jsonb->>'_id', m._jsonb->>'table', c.reltuples, c.relpages, "
        "pg_relation_size(c.oid) / current_setting('block_size')::int "
        f"FROM {_ident(schema)}.{_ident(METADATA_TABLE)} m "
        "JOIN pg_class c ON c.relname = m._jsonb->>'table' "
        "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = %s",
        (schema,)).fetchall()
    out: dict[str, int] = {}
    for collection, table, tuples, pages, now in rows:
        if not isinstance(collection, str) or not isinstance(table, str):
            continue
        if tuples is not None and tuples > 0 and pages:
            out[collection] = round(tuples / pages * now)
            continue
        counted = conn.execute(f"SELECT count(*) FROM {_ident(schema)}.{_ident(table)}").fetchone()
        out[collection] = int(counted[0]) if counted else 0
    return out


class TableEstimates:
    """The estimates of one FerretDB database on PostgreSQL, shared by the threads of
    a process and read again after :data:`MAX_AGE` seconds."""

    def __init__(self, url: str, schema: str, max_age: float = MAX_AGE) -> None:
        self.url, self.schema, self.max_age = url, schema, max_age
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._counts: dict[str, int] | None = None

    def count(self, collection: str) -> int | None:
        """The estimate for ``collection``; None when the catalog could not be read
        or did not know it at the last read (the caller counts)."""
        with self._lock:
            if self._counts is None or time.monotonic() - self._read_at > self.max_age:
                self._counts = self._read()
                self._read_at = time.monotonic()
            return self._counts.get(collection)

    def _read(self) -> dict[str, int]:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                return read_estimates(conn, self.schema)
        except psycopg.Error as exc:
            log.warning("table statistics of %s could not be read (%s): collections are "
                        "counted by FerretDB", self.schema, type(exc).__name__)
            return {}
