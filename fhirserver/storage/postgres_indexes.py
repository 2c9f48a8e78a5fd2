"""The indexes FerretDB's PostgreSQL backend needs but does not create.

FerretDB 1.x sends a query's top-level equality clauses to PostgreSQL as
``_jsonb->'field' @> '"value"'`` (which also matches a value inside an array field).
The indexes it creates for ``createIndexes`` are B-trees, which cannot answer ``@>``,
so without more every query reads the whole table. A GIN index (``jsonb_path_ops``)
on ``(_jsonb->'field')`` answers it: this module gives one to ``_id`` and to the
leading field of every index declared on a collection, so the one list of indexes
the server declares for MongoDB (documents.py, repository.py) also decides what the
embedded database indexes. Fields that are not top-level are skipped: FerretDB does
not push dotted paths down. The build of FerretDB that ``scripts/setup.sh`` makes
sends an ``_id`` string as an equality, which FerretDB's own unique index answers
(patches/id-equality.patch); the ``_id`` GIN index serves any other FerretDB 1.x.

PostgreSQL estimates how many rows a ``@>`` on an array field selects with a fixed
guess, so of two pushed equalities it often reads one index alone and filters the
other in every row it fetches, unpacking each document to do so: the month of one
patient's results (``b`` and ``pat``) read by the patient's index alone fetched each
of their records to keep the ten of that day (10 ms, against 0.5 ms), and a shard of
a population page (``k`` and ``ps``) by the shard's index alone fetched 776 records
to keep 29 (32 ms, against 1.8 ms). So an index led by two such fields gets one
GIN index over both (:func:`gin_pairs`), which answers both equalities in one index
scan, whatever the estimate, and either one alone as well as an index of its own
would: those fields have no other (an earlier version's is dropped).

A GIN index takes new entries into a pending list, merged into its tree when the
list passes ``gin_pending_list_limit`` (4 MB by default) or at a VACUUM, and every
scan of the index reads the whole list. A big table is vacuumed after a fifth more
rows, so its lists grow to their limit under steady writes: a look-up of one
patient's months (116 records) read 114 pending pages, 4-6 ms, against 0.25 ms
merged. Every index here keeps at most :data:`PENDING_LIMIT_KB` pending; one an
earlier version made gets that setting and has its list merged at the next start.
On a scratch table of 20,000 records with 30 keys each, inserts took 1.7 s with
that limit, 1.4 s with the default and 3.0 s with no pending list at all.

The indexes are plain PostgreSQL schema: FerretDB ignores them otherwise, and
dropping a collection drops them with its table. Creating them is idempotent and
runs at every start, so collections created since the last start get theirs too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any, NamedTuple

from ..search.keys import INDEXED
from ..search.shards import SHARD_FIELD

log = logging.getLogger(__name__)
METADATA_TABLE = "_ferretdb_database_metadata"
#: Top-level fields queries pin by equality: a search's lifted filter, and a population
#: page's shard (search/shards.py).
PINNED = INDEXED | {SHARD_FIELD}
#: The pending list each GIN index keeps at most (kB): a scan reads it whole.
PENDING_LIMIT_KB = 128
_PENDING_OPTION = f"gin_pending_list_limit={PENDING_LIMIT_KB}"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _leading(indexes: Iterable[Sequence[tuple[str, int]]]) -> list[str]:
    """``_id`` and each index's leading key, top-level ones only."""
    out = ["_id"]
    for keys in indexes:
        first = keys[0][0] if keys else ""
        if first and "." not in first and first not in out:
            out.append(first)
    return out


def gin_groups(indexes: Iterable[Sequence[tuple[str, int]]],
               pinned: Collection[str]) -> list[tuple[str, ...]]:
    """The GIN indexes to create, as their fields: one over each pair of
    :func:`gin_pairs`, and one per leading field that no pair holds (a GIN index over
    several fields answers a condition on any of them as well as one of its own)."""
    indexes = list(indexes)
    pairs = gin_pairs(indexes, pinned)
    paired = {f for pair in pairs for f in pair}
    return [*pairs, *((f,) for f in _leading(indexes) if f not in paired)]


def gin_fields(indexes: Iterable[Sequence[tuple[str, int]]],
               pinned: Collection[str] = ()) -> list[str]:
    """The top-level fields some GIN index answers: ``_id`` and each index's leading
    key (alone, or with the field it is paired with)."""
    return list(dict.fromkeys(f for group in gin_groups(indexes, pinned) for f in group))


def gin_pairs(indexes: Iterable[Sequence[tuple[str, int]]],
              pinned: Collection[str]) -> list[tuple[str, str]]:
    """The leading two fields of each index whose first two keys are both ``pinned``
    (top-level fields a query pins by equality, FerretDB pushes down, and that select
    few records together), ``_id`` aside: it selects one record alone."""
    out: list[tuple[str, str]] = []
    for keys in indexes:
        pair = tuple(k for k, _ in keys[:2])
        if len(pair) == 2 and all(f in pinned and f != "_id" for f in pair) \
                and pair not in out:
            out.append((pair[0], pair[1]))
    return out


def index_name(table: str, field: str) -> str:
    digest = hashlib.sha256(f"{table}\0{field}".encode()).hexdigest()[:12]
    return f"{table[:40]}_gin_{digest}"


def _column(field: str) -> str:
    return f"(_jsonb->'{field.replace(chr(39), chr(39) * 2)}') jsonb_path_ops"


class Statement(NamedTuple):
    """One statement that brings a table's GIN indexes to what is declared."""

    name: str
    sql: str
    creates: bool  # CREATE INDEX IF NOT EXISTS; else DROP INDEX IF EXISTS


def statements(schema: str, table: str, groups: Iterable[Sequence[str]]) -> list[Statement]:
    """``CREATE INDEX IF NOT EXISTS`` statements for one collection's table, one GIN
    index per group of fields, then ``DROP INDEX IF EXISTS`` for the index of its own
    that an earlier version gave a field a group of several now answers."""
    target = f"{_ident(schema)}.{_ident(table)}"
    groups = [tuple(group) for group in groups]
    alone = {group[0] for group in groups if len(group) == 1}
    paired = {f for group in groups if len(group) > 1 for f in group} - alone
    made = [(index_name(table, chr(0).join(group)), group) for group in groups]
    dropped = [index_name(table, field) for field in sorted(paired)]
    return [
        *(Statement(name, f"CREATE INDEX IF NOT EXISTS {_ident(name)} "
                          f"ON {target} USING gin ({', '.join(map(_column, group))}) "
                          f"WITH ({_PENDING_OPTION})", True)
          for name, group in made),
        *(Statement(name, f"DROP INDEX IF EXISTS {_ident(schema)}.{_ident(name)}", False)
          for name in dropped),
    ]


def _without_statistics(conn: Any, schema: str) -> set[str]:
    """The indexes of ``schema`` with no statistics gathered for their expressions, on
    a table not known to be empty (none where the catalog may not be read: a server
    not our own)."""
    import psycopg

    try:
        return {row[0] for row in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_class t ON t.oid = i.indrelid "
            "WHERE n.nspname = %s AND c.relkind = 'i' AND t.reltuples <> 0 AND NOT EXISTS "
            "(SELECT 1 FROM pg_statistic s WHERE s.starelid = c.oid)", (schema,)).fetchall()}
    except psycopg.errors.InsufficientPrivilege:
        return set()


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
        present = {row[0] for row in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)).fetchall()}
        unanalyzed = _without_statistics(conn, schema)
        for collection, table in rows:
            if not isinstance(table, str):
                continue
            indexes = by_collection.get(collection, ())
            wanted = statements(schema, table, gin_groups(indexes, PINNED))
            # An index built by a start killed before its ANALYZE has no statistics.
            changed = any(st.creates and st.name in unanalyzed for st in wanted)
            for st in wanted:
                if (st.name in present) == st.creates:
                    continue  # there already, or gone already
                try:
                    conn.execute(st.sql)  # type: ignore[arg-type]
                except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable,
                        psycopg.errors.UndefinedTable):
                    pass  # another worker starting at the same time created (dropped) it
                ran += 1
                changed = True
            if changed:
                # Fresh statistics, so that the planner picks the new indexes. Only
                # then (or for an index that has none yet): ANALYZE of 200,000
                # Observations takes seconds, and every worker runs this before it
                # serves.
                conn.execute(f"ANALYZE {_ident(schema)}.{_ident(table)}")  # type: ignore[arg-type]
        ran += _bound_pending_lists(conn, schema)
    log.debug("GIN index statements run on %s: %d", schema, ran)
    return ran


#: How long a start waits for an index it sets the pending-list limit on (ms).
#: ``ALTER INDEX ... SET`` locks the index exclusively, and every query of its table
#: would queue behind an ALTER that waits for a long statement (a sibling worker's
#: ANALYZE): it gives up instead, and a later start sets it.
ALTER_LOCK_TIMEOUT_MS = 1000


def _bound_pending_lists(conn: Any, schema: str) -> int:
    """Give every GIN index of ``schema`` without it the pending-list limit, and merge
    the list it has; returns how many were changed. Only a speed-up: an index this
    user may not change (a server not our own), one dropped meanwhile by another
    start, or one busy past :data:`ALTER_LOCK_TIMEOUT_MS` is left as it is."""
    import psycopg

    try:
        rows = conn.execute(
            "SELECT c.relname, c.reloptions FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam "
            "WHERE n.nspname = %s AND c.relkind = 'i' AND a.amname = 'gin'",
            (schema,)).fetchall()
    except psycopg.Error:
        return 0
    wanted = [name for name, options in rows if _PENDING_OPTION not in (options or ())]
    if not wanted:
        return 0
    changed = 0
    try:
        conn.execute(f"SET lock_timeout = {ALTER_LOCK_TIMEOUT_MS}")
        for name in wanted:
            target = f"{_ident(schema)}.{_ident(name)}"
            try:
                conn.execute(f"ALTER INDEX {target} SET ({_PENDING_OPTION})")
                conn.execute("SELECT gin_clean_pending_list(%s::regclass)", (target,))
            except psycopg.Error as exc:
                log.info("GIN index %s keeps its pending-list setting for now: %s",
                         name, type(exc).__name__)
                continue
            changed += 1
        conn.execute("RESET lock_timeout")
    except psycopg.Error as exc:
        log.info("GIN pending-list limits not set at this start: %s", type(exc).__name__)
    return changed
