"""What FerretDB sends the embedded PostgreSQL for a write (DESIGN.md section 5).

Every request appends its AuditEvent with one insert, and every create or update
writes a record and its history entry. FerretDB 1.x wrapped each such write in a
transaction of its own (BEGIN, the statement, COMMIT); the build's patch
(scripts/ferretdb/patches/single-statement-writes.patch) sends a write of one
statement alone, which PostgreSQL makes atomic by itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from pymongo import MongoClient
from pymongo.errors import BulkWriteError

from tests.seq_scans import _log_path, log_since, reconfigure

#: A statement line of the server log: its process id and the statement.
LINE = re.compile(r"\[(\d+)\] LOG:  (?:statement|execute [^:]*): (.*)$")


@contextmanager
def statements(pg_url: str, probe: Callable[[], object], marker: str) -> Iterator[list[tuple[str, str]]]:
    """Yields a list that holds, after the block, each statement PostgreSQL ran in
    it as (backend pid, text), in order. A reload reaches each session when it next
    waits for a command: the block starts once ``probe`` shows up in the log (a
    statement naming ``marker``)."""
    log = _log_path(pg_url)
    reconfigure(pg_url, "SET log_statement = 'all'")
    deadline = time.monotonic() + 10
    while True:
        offset = log.stat().st_size
        probe()
        if marker in log_since(log, offset) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    offset = log.stat().st_size
    ran: list[tuple[str, str]] = []
    try:
        yield ran
    finally:
        reconfigure(pg_url, "RESET log_statement")
        for line in log_since(log, offset).splitlines():
            found = LINE.search(line)
            if found:
                ran.append((found.group(1), found.group(2).strip()))


def _wrapped(ran: list[tuple[str, str]], verb: str, table_of: str) -> list[bool]:
    """For each ``verb`` statement on the schema ``table_of``: whether the statement
    its backend ran just before it was a BEGIN."""
    out = []
    for i, (pid, sql) in enumerate(ran):
        if sql.upper().startswith(verb) and f'"{table_of}".' in sql:
            before = [s for p, s in ran[:i] if p == pid]
            out.append(bool(before) and before[-1].lower() == "begin")
    return out


def test_a_write_of_one_statement_sends_no_transaction_around_it(
        database_server, db_name) -> None:  # type: ignore[no-untyped-def]
    """An insert of one document or of one batch, and an update of one document, are
    each one statement with no BEGIN and COMMIT around it; what they store, and a
    duplicate key's refusal, are as before. (FerretDB splits an insert into batches
    of 100 itself, each written on its own, as it did before.)"""
    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("the embedded database only (MONGODB_URI names another server)")
    with MongoClient(database_server[0]) as client:
        coll = client[db_name]["records"]
        coll.insert_one({"_id": "first", "n": 0})  # the table exists before the count
        with statements(pg_url, lambda: coll.find_one({"_id": "first"}), db_name) as ran:
            coll.insert_one({"_id": "one", "n": 1})
            coll.insert_many([{"_id": f"many{i}", "n": i} for i in range(5)])
            coll.replace_one({"_id": "one", "n": 1}, {"n": 2})
            with pytest.raises(BulkWriteError) as refused:
                coll.insert_many([{"_id": "dup", "n": 1}, {"_id": "one", "n": 3}])
            coll.insert_many([{"_id": f"big{i}", "n": i} for i in range(150)])  # > 100
        # one, five, the two-document batch refused, then the duplicate's retry one
        # by one (two), and 150 in two batches
        assert _wrapped(ran, "INSERT", db_name) == [False] * 7, ran
        assert _wrapped(ran, "UPDATE", db_name) == [False], ran
        assert not any(sql.lower() == "begin" for _, sql in ran), ran
        assert refused.value.details["writeErrors"][0]["code"] == 11000
        assert coll.find_one({"_id": "one"}) == {"_id": "one", "n": 2}
        assert coll.find_one({"_id": "dup"}) == {"_id": "dup", "n": 1}  # ordered: before it
        assert coll.count_documents({}) == 1 + 1 + 5 + 1 + 150


def test_a_look_up_by_id_is_an_equality_the_unique_id_index_answers(
        database_server, db_name) -> None:  # type: ignore[no-untyped-def]
    """A find by a string or ObjectID ``_id`` (alone, with ``$eq``, or with other
    equalities: an update's version check) reaches PostgreSQL as an equality on
    ``_jsonb->'_id'``, which FerretDB's own unique index answers with no GIN index of
    our own (scripts/ferretdb/patches/id-equality.patch); and what it selects is what
    MongoDB selects: a string never matches an ObjectID of the same hex, nor a number."""
    import psycopg
    from bson import ObjectId

    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("the embedded database only (MONGODB_URI names another server)")
    oid = ObjectId()
    with MongoClient(database_server[0]) as client:
        coll = client[db_name]["lookups"]
        other = ObjectId()
        coll.insert_many([{"_id": "a", "v": 1}, {"_id": str(other), "v": 2}, {"_id": oid, "v": 3},
                          {"_id": 7, "v": 4}, {"_id": "7", "v": 5}])
        coll.insert_many([{"_id": f"filler{i}", "v": 0} for i in range(300)])
        with statements(pg_url, lambda: coll.find_one({"_id": "a"}), db_name) as ran:
            found = [coll.find_one({"_id": "a"}), coll.find_one({"_id": {"$eq": str(other)}}),
                     coll.find_one({"_id": oid}), coll.find_one({"_id": "a", "v": 1}),
                     coll.find_one({"_id": "7"}), coll.find_one({"_id": 7}),
                     coll.find_one({"_id": "a", "v": 2}), coll.find_one({"_id": str(oid)}),
                     coll.find_one({"_id": other})]
        assert [d["v"] if d else None for d in found] == [1, 2, 3, 1, 5, 4, None, None, None]
        selects = [sql for _, sql in ran if sql.startswith("SELECT") and "lookups" in sql]
        by_id = [sql for sql in selects if "->'_id' = $" in sql]
        assert len(by_id) == 8, selects  # all but the number, which keeps containment
        table = re.search(rf'"{db_name}"\."(lookups_[0-9a-f]{{8}})"', by_id[0]).group(1)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'ANALYZE "{db_name}"."{table}"')
            indexes = {row[0] for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                (db_name, table))}
            assert not any("_gin_" in name for name in indexes), indexes  # FerretDB's own only
            plan = "\n".join(row[0] for row in conn.execute(
                f"""EXPLAIN SELECT _jsonb FROM "{db_name}"."{table}" WHERE _jsonb->'_id' = '"a"'"""))
        assert "Index Scan" in plan and "Seq Scan" not in plan, plan
