"""Which statements FerretDB sent to the embedded PostgreSQL that no index can answer.

While a test runs, PostgreSQL logs every statement with its parameters
(``log_min_duration_statement = 0``, applied to open sessions by a reload); after
it, each SELECT that filters a table of the test's database is planned again with
``enable_seqscan = off``: a plan that still scans the table means the filter's
equalities have no index (DESIGN.md section 5: a GIN index per pushed-down field).
Statements that pin nothing but ``del`` are population reads, which the server
bounds itself (too-costly past ``FHIR_SCAN_LIMIT``); only the collections that grow
with the data are checked (resources, their history, and those the server declares
indexes for), not one-document tables such as the audit head.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

STATEMENT = re.compile(r"LOG:  duration: [0-9.]+ ms  execute [^:]*: (SELECT .*)$")
PARAMETERS = re.compile(r"DETAIL:  [Pp]arameters: (.*)$")
PARAMETER = re.compile(r"\$(\d+) = ('(?:[^']|'')*'|NULL)")


def _log_path(pg_url: str) -> Path:
    host = parse_qs(urlparse(pg_url).query)["host"][0]
    return Path(host).parent / "postgresql.log"


def reconfigure(pg_url: str, change: str) -> None:
    """``ALTER SYSTEM <change>`` and a reload: open sessions apply it when they next
    wait for a command."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM {change}")  # type: ignore[arg-type]
        conn.execute("SELECT pg_reload_conf()")


def log_since(log: Path, offset: int) -> str:
    """What the server log holds past ``offset``."""
    with open(log, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode("utf-8", "replace")


def _large(schema: str, sql: str) -> bool:
    from fhirserver.model.types import SUPPORTED_TYPES
    from fhirserver.storage.repository import OPERATIONAL_INDEXES

    names = {*SUPPORTED_TYPES, *(t + "_history" for t in SUPPORTED_TYPES),
             *(c for c, _ in OPERATIONAL_INDEXES)}
    table = re.search(rf'FROM "{re.escape(schema)}"\."([^"]+)_[0-9a-f]{{8}}"', sql)
    return bool(table) and table.group(1) in {n.lower() for n in names}


def _statements(text: str, schema: str) -> list[str]:
    """The SELECTs on ``schema``'s large tables that pin more than ``del``,
    parameters filled in."""
    out: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        found = STATEMENT.search(line)
        if not found or " WHERE " not in found.group(1) or not _large(schema, found.group(1)):
            continue
        sql = found.group(1)
        detail = PARAMETERS.search(lines[i + 1]) if i + 1 < len(lines) else None
        if detail is None and "$1" in sql:
            # Without its parameters a statement cannot be planned again, and the
            # check would pass without checking (a terse log drops them).
            raise AssertionError(f"the PostgreSQL log holds no parameters for: {sql[:200]}")
        values = dict(PARAMETER.findall(detail.group(1))) if detail else {}
        for n in sorted(values, key=int, reverse=True):
            sql = sql.replace(f"${n}", values[n])
        pinned = set(re.findall(r"_jsonb->'([^']+)' @>", sql))
        if pinned - {"del"}:
            out.append(sql)
    return out


@contextmanager
def no_seq_scans(pg_url: str, schema: str,
                 checked: list[str] | None = None) -> Iterator[list[str]]:
    """Yields a list that holds, after the block, the statements on ``schema`` that
    only a sequential scan answers; ``checked`` receives every statement planned
    (none when the log holds no parameters: the check would pass unseen)."""
    import psycopg

    log = _log_path(pg_url)
    offset = log.stat().st_size
    reconfigure(pg_url, "SET log_min_duration_statement = 0")
    scans: list[str] = []
    try:
        yield scans
    finally:
        reconfigure(pg_url, "RESET log_min_duration_statement")
        text = log_since(log, offset)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SET enable_seqscan = off")
            for sql in dict.fromkeys(_statements(text, schema)):
                if checked is not None:
                    checked.append(sql)
                plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql))  # type: ignore[arg-type]
                if "Seq Scan" in plan:
                    scans.append(f"{sql}\n{plan}")
