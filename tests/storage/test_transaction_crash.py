"""A server killed in the middle of a 300-entry transaction shows, once restarted,
all of it or none of it, from its first answer on (FHIR R4 http.html#transaction:
"either all succeed or all fail"; the server's processes get SIGKILL as a group,
the database included). scripts/soak_transactions.py runs many more kill points.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fhirserver.storage.ferretdb import FerretDBNotFound, find_binary
from tests.storage.crash_harness import Server, crash_once, kill_points

try:
    find_binary()
    HAVE_BINARY = True
except FerretDBNotFound:
    HAVE_BINARY = False


@pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="kills the embedded database")
@pytest.mark.skipif(not HAVE_BINARY, reason="FerretDB not built (bash scripts/setup.sh)")
@pytest.mark.timeout(900)
def test_kill_9_mid_transaction_leaves_all_or_nothing_http_transaction(tmp_path: Path) -> None:
    """At each kill point (journal written, first Observations stored, all stored), the
    restarted server's first answer and the database both show the Patient with all
    299 Observations or neither, and no pending journal entry is left; a transaction
    that was answered 200 before the kill is all there."""
    server = Server(tmp_path / "data")
    server.start()
    try:
        server.wait_up()
        results = []
        for name, when in kill_points().items():
            crash = crash_once(server, when)
            results.append((name, crash))
            assert crash.whole, (name, crash)
        print("\n".join(f"{name}: stored at kill {c.at_kill}, outcome {c.outcome}, "
                        f"first answer {c.restart_seconds:.1f} s after restart"
                        for name, c in results))
    finally:
        server.stop()
