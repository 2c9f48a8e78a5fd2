"""How the embedded PostgreSQL plans the statements FerretDB sends (DESIGN.md section 5).

FerretDB keeps each document in one jsonb column, which PostgreSQL moves out of line
(TOAST) past about 2 KB. The planner prices a sequential scan by the table's pages,
which then hold only pointers, so it judged a few hundred Patients cheaper to read
whole than to look up in the GIN index, and a read by id fetched and decompressed
every one of them. The server's settings make the index the planner's choice.
"""

from __future__ import annotations

import json
import re

import pytest

from tests import factories as f

#: About 3 KB of address per Patient: each document is stored out of line.
LINES = [f"{n} Long Street, Building {n}, Floor {n % 30}, Room {n:04d}" for n in range(60)]


def _table(conn, schema: str, collection: str) -> str:  # type: ignore[no-untyped-def]
    row = conn.execute(
        f'SELECT _jsonb->>\'table\' FROM "{schema}"._ferretdb_database_metadata '
        "WHERE _jsonb->>'_id' = %s", (collection,)).fetchone()
    return str(row[0])


def test_read_by_id_of_a_small_table_of_large_documents_uses_the_index(
        database_server, db_name, fhir) -> None:  # type: ignore[no-untyped-def]
    """R4 http.html#read: a read by id looks up one document, however few the table
    holds; the plan PostgreSQL makes for FerretDB's ``_id`` statement has no
    sequential scan."""
    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("the embedded database only (MONGODB_URI names another server)")
    import psycopg

    ids = []
    for n in range(150):
        r = fhir.post("/Patient", f.patient(
            family=f"Planner{n}", address=[{"line": LINES, "city": "Hangzhou"}]))
        assert r.status_code == 201, r.get_json()
        ids.append(r.get_json()["id"])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        table = _table(conn, db_name, "Patient")
        conn.execute(f'ANALYZE "{db_name}"."{table}"')
        pages, rows = conn.execute(
            "SELECT relpages, reltuples FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (db_name, table)).fetchone()
        assert rows >= 150 and pages < rows / 10, "the documents are stored out of line"
        plan = conn.execute(
            f'EXPLAIN (FORMAT JSON) SELECT _jsonb FROM "{db_name}"."{table}" '
            f"WHERE _jsonb->'_id' @> '{json.dumps(ids[75])}'").fetchone()[0]
    assert "Seq Scan" not in json.dumps(plan), plan



@pytest.mark.parametrize("rtype", ["Observation", "DiagnosticReport"])
def test_two_pinned_fields_have_one_gin_index_over_both(
        database_server, db_name, fhir, rtype: str) -> None:  # type: ignore[no-untyped-def]
    """A patient's month of results (``b``, ``pat``: a page in date order, search.html#sort),
    their records of one code (``pat``, ``k``) and one shard of a population page (``k``,
    ``ps``): PostgreSQL guesses what an equality on an array field selects, and given
    one index per field it read one of them and fetched, unpacked and tested every
    record it found for the other (on the bench data, a crowded patient's day fetched
    309 records for 10). Each pair has one GIN index over both fields, in the order
    of the declared index it leads, and no other."""
    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("the embedded database only (MONGODB_URI names another server)")
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        table = _table(conn, db_name, rtype)
        definitions = [row[0] for row in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
            (db_name, table)).fetchall()]
    gin = [re.findall(r"_jsonb -> '([^']+)'::text", d) for d in definitions if "USING gin" in d]
    for pair in (["b", "pat"], ["pat", "k"], ["k", "ps"]):
        assert pair in gin, (pair, definitions)
    # Each answers its fields alone too: a second index of one of them would only
    # cost every write.
    assert not [g for g in gin if g in (["b"], ["pat"], ["k"], ["ps"])], definitions


def test_every_gin_index_keeps_a_short_pending_list_and_an_older_one_is_merged_at_start(
        database_server, db_name, fhir, settings) -> None:  # type: ignore[no-untyped-def]
    """R4 http.html#search answered from indexes at their speed: each scan of a GIN
    index reads its whole pending list, which PostgreSQL lets grow to 4 MB by default
    (storage/postgres_indexes.py). Every GIN index the server makes keeps at most
    PENDING_LIMIT_KB pending; an index an earlier version made without that setting,
    with entries pending, gets it at the next start and has its list merged."""
    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("the embedded database only (MONGODB_URI names another server)")
    import psycopg

    from fhirserver.storage.postgres_indexes import PENDING_LIMIT_KB
    from fhirserver.storage.repository import Repository

    pid = fhir.create(f.patient("Pending"))["id"]
    option = f"gin_pending_list_limit={PENDING_LIMIT_KB}"

    def gin_options(conn) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
        return {name: options or [] for name, options in conn.execute(
            "SELECT c.relname, c.reloptions FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam "
            "WHERE n.nspname = %s AND a.amname = 'gin'", (db_name,)).fetchall()}

    with psycopg.connect(pg_url, autocommit=True) as conn:
        indexes = gin_options(conn)
        assert indexes and all(option in o for o in indexes.values()), indexes
        table = _table(conn, db_name, "Observation")
        older = next(name for name in indexes if name.startswith(table))
        conn.execute(f'ALTER INDEX "{db_name}"."{older}" RESET (gin_pending_list_limit)')
        conn.execute(f'ALTER INDEX "{db_name}"."{older}" SET (fastupdate = on)')
    for i in range(40):  # entries left pending (the session default limit is 4 MB)
        fhir.create(f.observation(pid, code=f"9-{i}"))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert option not in gin_options(conn)[older]
    Repository.from_settings(settings).close()  # the next start
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert option in gin_options(conn)[older]
        merged = conn.execute(f"SELECT gin_clean_pending_list('\"{db_name}\".\"{older}\"'"
                              "::regclass)").fetchone()[0]
        assert merged == 0


def test_a_start_does_not_wait_on_a_busy_index_for_its_pending_list_setting(
        database_server, db_name, fhir, settings) -> None:  # type: ignore[no-untyped-def]
    """Setting the pending-list limit locks the index exclusively, and every query of
    its table would queue behind a start waiting for a long statement: the start gives
    up on a busy index after ALTER_LOCK_TIMEOUT_MS (serving goes on, http.html#search)
    and a later start sets it."""
    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("the embedded database only (MONGODB_URI names another server)")
    import threading

    import psycopg

    from fhirserver.storage.postgres_indexes import PENDING_LIMIT_KB
    from fhirserver.storage.repository import Repository

    fhir.create(f.patient("Busy"))
    option = f"gin_pending_list_limit={PENDING_LIMIT_KB}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        table = _table(conn, db_name, "Patient")
        index = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_am a ON a.oid = c.relam WHERE n.nspname = %s AND a.amname = 'gin' "
            "AND c.relname LIKE %s", (db_name, f"{table}%")).fetchone()[0]
        conn.execute(f'ALTER INDEX "{db_name}"."{index}" RESET (gin_pending_list_limit)')

    def options(conn) -> list[str]:  # type: ignore[no-untyped-def]
        return conn.execute(
            "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", (db_name, index)).fetchone()[0] or []

    with psycopg.connect(pg_url) as busy:  # a long statement's transaction on the table
        busy.execute(f'SELECT count(*) FROM "{db_name}"."{table}"').fetchone()
        start = threading.Thread(target=lambda: Repository.from_settings(settings).close())
        start.start()
        start.join(20)
        waited = start.is_alive()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            kept = option not in options(conn)
        busy.rollback()  # lets a start that waits go on, so that the test ends
        start.join()
    assert not waited and kept
    Repository.from_settings(settings).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert option in options(conn)


def test_starts_at_once_and_a_killed_start_leave_each_pair_indexed_and_no_single(
        database_server, db_name, fhir, app) -> None:  # type: ignore[no-untyped-def]
    """Two server processes starting together on a database an earlier version indexed
    field by field both create the pairs' indexes and drop the single ones, neither
    fails (the other got there first); a start killed (``kill -9``) in the middle
    leaves what the next start completes. Searches go on being answered from
    indexes (http.html#search)."""
    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("the embedded database only (MONGODB_URI names another server)")
    import os
    import signal
    import subprocess
    import sys
    import threading

    import psycopg

    from fhirserver.storage.postgres_indexes import _column, ensure_gin_indexes, index_name
    from fhirserver.storage.repository import OPERATIONAL_INDEXES

    pid = fhir.create(f.patient())["id"]
    for n in range(30):
        fhir.create(f.observation(pid, effectiveDateTime=f"2024-01-{n % 28 + 1:02d}T08:00:00Z"))
    repo = app.extensions["fhirserver"].repo
    declared = [*repo.cols.declared_indexes(), *OPERATIONAL_INDEXES]

    def as_before() -> str:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            table = _table(conn, db_name, "Observation")
            for pair in (("pat", "k"), ("b", "pat"), ("k", "ps")):
                conn.execute(f'DROP INDEX IF EXISTS "{db_name}".'
                             f'"{index_name(table, chr(0).join(pair))}"')
            for field in ("pat", "k", "b", "ps"):
                conn.execute(f'CREATE INDEX IF NOT EXISTS "{index_name(table, field)}" '
                             f'ON "{db_name}"."{table}" USING gin ({_column(field)})')
        return table

    def gin() -> list[list[str]]:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            definitions = [row[0] for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                (db_name, table)).fetchall()]
        return [re.findall(r"_jsonb -> '([^']+)'::text", d)
                for d in definitions if "USING gin" in d]

    def settled() -> None:
        got = gin()
        for pair in (["b", "pat"], ["pat", "k"], ["k", "ps"]):
            assert pair in got, got
        assert not [g for g in got if g in (["b"], ["pat"], ["k"], ["ps"])], got

    def start(together: threading.Barrier, failures: list[Exception]) -> None:
        together.wait(timeout=30)
        try:
            ensure_gin_indexes(pg_url, db_name, declared)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    for _ in range(3):
        table = as_before()
        together, failures = threading.Barrier(2), []
        workers = [threading.Thread(target=start, args=(together, failures)) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert not failures, failures
        settled()

    import time

    code = (f"from fhirserver.storage.postgres_indexes import ensure_gin_indexes\n"
            f"ensure_gin_indexes({pg_url!r}, {db_name!r}, {declared!r})\n")
    table = as_before()
    began = time.monotonic()
    subprocess.run([sys.executable, "-c", code], env={**os.environ}, check=True, timeout=120)
    whole = time.monotonic() - began
    settled()
    for delay in (whole * 0.6, whole * 0.8, whole * 0.9, whole * 0.95):
        table = as_before()
        child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        ensure_gin_indexes(pg_url, db_name, declared)
        settled()
    got = [e["resource"]["id"] for e in fhir.get(
        f"Observation?patient={pid}&_count=50").get_json()["entry"]]
    assert len(got) == 30


def test_a_start_with_its_indexes_in_place_runs_no_statement_and_no_analyze(
        database_server, db_name, fhir, app) -> None:  # type: ignore[no-untyped-def]
    """Every server process brings the GIN indexes to what is declared before it
    serves. When they are in place it changes nothing and gathers no statistics again
    (an ANALYZE of the bench's 200,000 Observations took 8 s, each start of each
    worker); when it creates one, it gathers them for that table."""
    pg_url = database_server[1]
    if not pg_url:
        pytest.skip("the embedded database only (MONGODB_URI names another server)")
    import psycopg

    from fhirserver.storage.postgres_indexes import ensure_gin_indexes, index_name, statements
    from fhirserver.storage.repository import OPERATIONAL_INDEXES

    fhir.create(f.observation(fhir.create(f.patient())["id"]))
    repo = app.extensions["fhirserver"].repo
    declared = [*repo.cols.declared_indexes(), *OPERATIONAL_INDEXES]

    def analyzed() -> dict[str, object]:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return dict(conn.execute(
                "SELECT relname, last_analyze FROM pg_stat_user_tables WHERE schemaname = %s",
                (db_name,)).fetchall())

    ensure_gin_indexes(pg_url, db_name, declared)
    before = analyzed()
    assert ensure_gin_indexes(pg_url, db_name, declared) == 0
    assert analyzed() == before
    with psycopg.connect(pg_url, autocommit=True) as conn:
        table = _table(conn, db_name, "Observation")
        conn.execute(f'DROP INDEX "{db_name}"."{index_name(table, "pat" + chr(0) + "k")}"')
    assert ensure_gin_indexes(pg_url, db_name, declared) == 1
    after = analyzed()
    assert after[table] != before[table]
    assert {t: v for t, v in after.items() if t != table} == \
        {t: v for t, v in before.items() if t != table}
    # A start killed (kill -9) after its index was built, before its ANALYZE: the
    # next start finds the index without statistics, and gathers them.
    pair = next(st for st in statements(db_name, table, [("pat", "k")]) if st.creates)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP INDEX "{db_name}"."{pair.name}"')
        conn.execute(pair.sql)
    assert ensure_gin_indexes(pg_url, db_name, declared) == 0
    again = analyzed()
    assert again[table] != after[table]
    assert ensure_gin_indexes(pg_url, db_name, declared) == 0
    assert analyzed() == again
