"""The indexes FerretDB's PostgreSQL backend needs but does not create.

FerretDB 1.x sends a query's top-level equality clauses to PostgreSQL as
``_jsonb->'field' @> '"value"'`` (which also matches a value inside an array field).
The indexes it creates for ``createIndexes`` are B-trees, which cannot answer ``@>``,
so without more every query reads the whole table. A GIN index (``jsonb_path_ops``)
on ``(_jsonb->'field')`` answers it: this module gives one to ``_id`` and to the
leading field of every index declared on a collection, so the one list of indexes
the server declares for MongoDB (documents.py, repository.py) also decides what the
embedded database indexes. Fields that are not top-level are skipped: FerretDB does
not push dotted paths down.

The indexes are plain PostgreSQL schema: FerretDB ignores them otherwise, and
dropping a collection drops them with its table. Creating them is idempotent and
runs at every start, so collections created since the last start get theirs too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)
METADATA_TABLE = "_ferretdb_database_metadata"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def gin_fields(indexes: Iterable[Sequence[tuple[str, int]]]) -> list[str]:
    """The top-level fields to GIN-index: ``_id`` and each index's leading key."""
    out = ["_id"]
    for keys in indexes:
        first = keys[0][0] if keys else ""
        if first and "." not in first and first not in out:
            out.append(first)
    return out


def index_name(table: str, field: str) -> str:
    digest = hashlib.sha256(f"{table}\0{field}".encode()).hexdigest()[:12]
    return f"{table[:40]}_gin_{digest}"


def statements(schema: str, table: str, fields: Iterable[str]) -> list[str]:
    """``CREATE INDEX IF NOT EXISTS`` statements for one collection's table."""
    target = f"{_ident(schema)}.{_ident(table)}"
    return [
        f"CREATE INDEX IF NOT EXISTS {_ident(index_name(table, field))} ON {target} "
        f"USING gin ((_jsonb->'{field.replace(chr(39), chr(39) * 2)}') jsonb_path_ops)"
        for field in fields
    ]


def ensure_gin_indexes(url: str, schema: str,
                       declared: Iterable[tuple[str, Sequence[tuple[str, int]]]]) -> int:
    """Create the missing GIN indexes for the ``declared`` (collection, keys) indexes of
    FerretDB database ``schema`` in the PostgreSQL database at ``url``, and for ``_id``
    of every collection there; returns how many statements ran."""
    import psycopg

    by_collection: dict[str, list[Sequence[tuple[str, int]]]] = {}
    for collection, keys in declared:
        by_collection.setdefault(collection, []).append(keys)
    ran = 0
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            (schema, METADATA_TABLE)).fetchone()
        if not exists:
            return 0
        rows = conn.execute(
            f"SELECT _jsonb->>'_id', _jsonb->>'table' "  # type: ignore[arg-type]
            f"FROM {_ident(schema)}.{_ident(METADATA_TABLE)}").fetchall()
        for collection, table in rows:
            if not isinstance(table, str):
                continue
            fields = gin_fields(by_collection.get(collection, ()))
            for sql in statements(schema, table, fields):
                try:
                    conn.execute(sql)  # type: ignore[arg-type]
                except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                    pass  # another worker starting at the same time created it
                ran += 1
            # fresh statistics, so that the planner picks the indexes
            conn.execute(f"ANALYZE {_ident(schema)}.{_ident(table)}")  # type: ignore[arg-type]
    log.debug("GIN index statements run on %s: %d", schema, ran)
    return ran
