"""Concurrent requests and the audit log: each answer still waits for its own
AuditEvent (group commit, ``audit/appender.py``), two app instances on one database
(as two worker processes) keep one chain, and a log that cannot be written fails
every request waiting on it with 503 and no data."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from fhirserver.api.auditing import EXTENSION
from fhirserver.audit.chain import RECORDS, event_of, verify
from tests import factories as f
from tests.conftest import FhirClient, make_app


def in_threads(count: int, work: Callable[[int], None]) -> None:
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def body(n: int) -> None:
        try:
            start.wait()
            work(n)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    if failures:
        raise failures[0]


def test_two_app_instances_on_one_database_keep_one_chain(app, settings):
    """Reads through two apps at once (their own clients and appenders, like two
    gunicorn workers): one record per answer, each naming the patient read, in a
    chain that verifies."""
    other = make_app(settings)
    try:
        pid = FhirClient(app.test_client()).create(f.patient("Both"))["id"]
        db = app.extensions["fhirserver"].repo.db
        before = db[RECORDS].count_documents({})
        apps, each = (app, other), 6

        def reader(n: int) -> None:
            client = apps[n % 2].test_client()
            for _ in range(each):
                r = client.get(f"/Patient/{pid}")
                assert r.status_code == 200, r.get_data(as_text=True)

        in_threads(6, reader)
        setup = app.extensions[EXTENSION]
        report = verify(db, setup.keys, [setup.checkpoints])
        assert report.broken is None and report.checked == before + 6 * each
        reads = [d for d in db[RECORDS].find({}) if event_of(d)["subtype"][0]["code"] == "read"]
        assert len(reads) == 6 * each and all(d["patients"] == [pid] for d in reads)
        assert sum(a.extensions[EXTENSION].appender.records for a in apps) == 6 * each + before
    finally:
        other.extensions["fhirserver"].repo.close()


def test_a_log_that_cannot_be_written_fails_every_waiting_request(app, tmp_path):
    """Concurrent reads while the log cannot be anchored (its checkpoint file cannot
    be created): every answer is 503 without the data, none is a 200."""
    pid = FhirClient(app.test_client()).create(f.patient("Secret"))["id"]
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    setup = app.extensions[EXTENSION]
    app.extensions[EXTENSION] = dataclasses.replace(setup, checkpoints=blocker / "checkpoints.log")
    answers: list[tuple[int, str]] = []

    def reader(n: int) -> None:
        c = app.test_client()
        for _ in range(4):
            r = c.get(f"/Patient/{pid}")
            answers.append((r.status_code, r.get_data(as_text=True)))

    in_threads(6, reader)
    assert len(answers) == 24
    assert all(status == 503 and "Secret" not in body for status, body in answers)
