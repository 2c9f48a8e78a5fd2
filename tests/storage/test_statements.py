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
