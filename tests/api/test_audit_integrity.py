"""The audit log's integrity against someone who can write the database but holds no
key (DESIGN.md section 1: every access is recorded; the record must not be quietly
rewritten): a keyed chain (HMAC-SHA256, RFC 2104) over every stored field, anchored
by signed checkpoints outside the database. Events come from real HTTP requests;
the tampering is done on the raw MongoDB documents, as an intruder would; each
finding is checked through ``fhirserver audit verify`` too."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from bson import Binary, ObjectId
from click.testing import CliRunner

from fhirserver.api.auditing import EXTENSION
from fhirserver.audit.chain import (
    GENESIS,
    HEAD,
    RECORDS,
    Report,
    digest,
    event_of,
    mac,
    newest,
    record_id,
    verify,
)
from fhirserver.cli import main
from tests import factories as f
from tests.conftest import http_as


class Log:
    """The live server's audit log, its raw documents and its verification."""

    def __init__(self, live) -> None:
        self.url, self.app = live
        self.state = self.app.extensions["fhirserver"]
        self.setup = self.app.extensions[EXTENSION]
        self.db = self.state.repo.db
        self.http = http_as(live)

    def requests(self, n: int = 3) -> None:
        for i in range(n):
            assert self.http.post("Patient", f.patient(f"P{i}")).status_code == 201
        assert self.http.get("Patient?_count=5").status_code == 200

    @property
    def last(self) -> int:
        return newest(self.db)[0]

    def record(self, n: int) -> dict:
        return self.db[RECORDS].find_one({"_id": record_id(n)})

    def verify(self) -> Report:
        return verify(self.db, self.setup.keys, [self.setup.checkpoints])

    def cli(self):  # type: ignore[no-untyped-def]
        """``fhirserver audit verify`` with the server's settings."""
        s = self.state.settings
        env = {"MONGODB_URI": s.mongodb_uri, "MONGODB_DB": s.mongodb_db,
               "FHIR_DATA_DIR": str(s.data_dir), "FHIR_MASTER_KEY": None,
               "FHIR_MASTER_KEY_FILE": None, "FHIR_AUDIT_CHECKPOINTS": None}
        return CliRunner().invoke(main, ["audit", "verify"], env=env)

    def assert_broken_at(self, n: int, words: str) -> None:
        report = self.verify()
        assert report.broken is not None, report
        assert report.broken.seq == n and words in report.broken.problem, report
        assert report.checked == n - 1
        result = self.cli()
        assert result.exit_code == 1, result.output
        assert f"audit log broken at record {n}: " in result.output and words in result.output


@pytest.fixture
def log(live) -> Log:
    log = Log(live)
    log.requests()
    return log


def test_an_intact_log_verifies(log):
    report = log.verify()
    assert report.broken is None and report.checked == log.last >= 4
    assert report.checkpoint == log.last and report.legacy == 0
    result = log.cli()
    assert result.exit_code == 0, result.output
    assert f"audit log intact: {log.last} records" in result.output


def test_changing_whose_record_it_was_is_detected(log):
    """``patients`` decides what a patient sees in GET AuditEvent: the MAC covers it."""
    log.db[RECORDS].update_one({"_id": record_id(2)}, {"$set": {"patients": ["someone-else"]}})
    log.assert_broken_at(2, "do not match its MAC (altered)")


def test_a_field_added_to_a_record_is_detected(log):
    log.db[RECORDS].update_one({"_id": record_id(3)}, {"$set": {"note": "harmless"}})
    log.assert_broken_at(3, "altered")


@pytest.mark.parametrize("value", [Binary(b"\x00\x01"), ObjectId()], ids=["binary", "objectid"])
def test_a_value_json_cannot_hold_is_named_as_an_alteration_not_a_crash(log, value):
    """The MAC is over canonical JSON, and the server stores nothing JSON has no form
    for: a BSON binary or ObjectId put in a record is reported at that record, and
    ``audit verify`` says so instead of failing with a traceback."""
    log.db[RECORDS].update_one({"_id": record_id(2)}, {"$set": {"event": value}})
    log.assert_broken_at(2, "not JSON (altered)")


def test_a_rewritten_event_with_a_recomputed_plain_chain_is_detected(log):
    """Recomputing the SHA-256 links after a rewritten event (what made the plain
    chain verify again) leaves the rewritten record's MAC wrong."""
    rewritten = 2
    previous = log.record(rewritten - 1)["mac"]
    for n in range(rewritten, log.last + 1):
        doc = log.record(n)
        event = event_of(doc)
        if n == rewritten:
            event = {**event, "outcome": "0", "action": "D"}
            doc["event"] = orjson.dumps(event).decode()
        doc["prev"], doc["mac"] = previous, digest(previous, event)
        previous = doc["mac"]
        log.db[RECORDS].replace_one({"_id": doc["_id"]}, doc)
    log.db[HEAD].replace_one({"_id": "head"}, {"_id": "head", "seq": log.last, "link": previous})
    log.assert_broken_at(rewritten, "altered")


def test_a_log_rewritten_wholesale_as_old_plain_records_is_detected(log):
    """Dropping the MACs to pass as records from before the keyed chain: the
    checkpoints show the records were keyed."""
    previous = GENESIS
    for doc in list(log.db[RECORDS].find({}).sort("_id", 1)):
        event = {**event_of(doc), "outcome": "0"}
        plain = {"_id": doc["_id"], "prev": previous, "hash": digest(previous, event),
                 "event": event, "patients": doc["patients"]}
        log.db[RECORDS].replace_one({"_id": doc["_id"]}, plain)
        previous = plain["hash"]
    log.assert_broken_at(1, "rewritten as a plain record")


def test_deleting_the_newest_records_and_moving_the_head_back_is_detected(log):
    last = log.last
    keep = log.record(last - 2)
    log.db[RECORDS].delete_many({"_id": {"$in": [record_id(last - 1), record_id(last)]}})
    log.db[HEAD].replace_one({"_id": "head"}, {"_id": "head", "seq": last - 2, "link": keep["mac"]})
    log.assert_broken_at(last - 1, f"the newest checkpoint names record {last}")


def test_deleting_the_newest_record_alone_is_detected(log):
    last = log.last
    log.db[RECORDS].delete_one({"_id": record_id(last)})
    log.db[HEAD].delete_one({"_id": "head"})
    log.assert_broken_at(last, "missing")


def test_deleting_a_middle_record_is_detected(log):
    log.db[RECORDS].delete_one({"_id": record_id(2)})
    log.assert_broken_at(2, "record is missing")


def test_an_altered_checkpoint_is_detected(log):
    path: Path = log.setup.checkpoints
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"at":"', '"at":"1', 1)
    path.write_text("".join(lines))
    report = log.verify()
    assert report.broken is not None and report.broken.seq == 2
    assert "checkpoint line 2" in report.broken.problem and "does not match its MAC" in report.broken.problem
    result = log.cli()
    assert result.exit_code == 1 and "checkpoint line 2" in result.output


def test_no_checkpoints_while_keyed_records_exist_is_detected(log):
    log.setup.checkpoints.unlink()
    log.assert_broken_at(1, "no checkpoints")


def test_checkpoint_lines_out_of_order_still_verify(log):
    """Workers append concurrently, so lines arrive out of record order."""
    path: Path = log.setup.checkpoints
    lines = path.read_text().splitlines(keepends=True)
    random.Random(7).shuffle(lines)
    path.write_text("".join(lines))
    assert log.verify().broken is None


def test_records_from_before_the_keyed_chain_are_accepted_only_as_an_unbroken_prefix(live):
    """A database from an older version: its plain records stay verifiable, the first
    keyed record links to them, and rewriting them breaks that link."""
    log = Log(live)
    previous = GENESIS
    for n in (1, 2, 3):
        event = {"resourceType": "AuditEvent", "id": f"audit-{n}", "action": "R"}
        doc = {"_id": record_id(n), "prev": previous, "hash": digest(previous, event),
               "event": event, "patients": ["p1"]}
        log.db[RECORDS].insert_one(doc)
        previous = doc["hash"]
    log.db[HEAD].insert_one({"_id": "head", "seq": 3, "hash": previous})
    log.requests(1)
    report = log.verify()
    assert report.broken is None and report.legacy == 3 and report.checked == log.last >= 5
    assert log.record(4)["prev"] == previous and "mac" in log.record(4)
    result = log.cli()
    assert result.exit_code == 0 and "3 of them from before keyed records" in result.output
    # Rewrite a plain record and recompute the plain links after it.
    previous = log.record(1)["hash"]
    for n in (2, 3):
        doc = log.record(n)
        doc["event"]["action"] = "D"
        doc["prev"], doc["hash"] = previous, digest(previous, doc["event"])
        log.db[RECORDS].replace_one({"_id": doc["_id"]}, doc)
        previous = doc["hash"]
    log.assert_broken_at(4, "does not link")


def test_a_plain_record_after_keyed_ones_is_detected(log):
    n = log.last
    last = log.record(n)
    event = {"resourceType": "AuditEvent", "id": "forged"}
    log.db[RECORDS].insert_one({"_id": record_id(n + 1), "prev": last["mac"],
                                "hash": digest(last["mac"], event), "event": event, "patients": []})
    log.assert_broken_at(n + 1, "has no MAC")


def test_records_holding_their_event_as_a_document_still_verify_and_are_served(live):
    """Records written before events were stored as text (format 2: the event as a
    document) stay part of the chain: they verify, the text records after them link to
    them, and a patient still sees them in GET AuditEvent (R4 auditevent.html)."""
    log = Log(live)
    keys, previous, pid = log.setup.keys, GENESIS, "p-before-text"
    for n in (1, 2, 3):
        record = {"_id": record_id(n), "v": 2, "kid": keys.kid, "prev": previous,
                  "event": {"resourceType": "AuditEvent", "id": f"audit-{n}", "action": "R",
                            "recorded": "2026-01-01T00:00:00Z",
                            "agent": [{"who": {"reference": "Practitioner/dr-old"},
                                       "requestor": True}],
                            "entity": [{"what": {"reference": f"Patient/{pid}"}}]},
                  "patients": [pid]}
        record["mac"] = mac(keys.record, record)
        log.db[RECORDS].insert_one(record)
        previous = record["mac"]
    log.db[HEAD].insert_one({"_id": "head", "seq": 3, "link": previous})
    log.requests(1)
    patient = http_as(live, "patient", "patient/*.rs", patient=pid)
    r = patient.get("AuditEvent?_count=50")
    assert r.status_code == 200, r.text
    report = log.verify()
    assert report.broken is None and report.checked == log.last >= 6 and report.legacy == 0
    assert log.record(4)["prev"] == previous and isinstance(log.record(4)["event"], str)
    assert log.record(4)["v"] == 3 and event_of(log.record(4))["id"] == "audit-4"
    ids = [e["resource"]["id"] for e in r.json()["entry"]]
    assert ids[-3:] == ["audit-3", "audit-2", "audit-1"]
    assert r.json()["entry"][-1]["resource"]["agent"][0]["who"]["reference"] == "Practitioner/dr-old"


def test_an_event_text_altered_into_nonsense_is_detected_and_not_served_as_an_event(log):
    """The MAC covers the event's text; a patient's GET AuditEvent over a record whose
    text no longer reads as JSON answers an OperationOutcome naming the record, not a
    crash and not a silently shorter log."""
    n = log.last
    pid = log.record(n)["patients"][0]
    log.db[RECORDS].update_one({"_id": record_id(n)}, {"$set": {"event": "{not json"}})
    log.assert_broken_at(n, "altered")
    r = http_as((log.url, log.app), "patient", "patient/*.rs", patient=pid).get(
        "AuditEvent?_count=50")
    assert r.status_code == 500 and r.json()["resourceType"] == "OperationOutcome"
    assert f"audit record {record_id(n)} holds no readable event" in r.text
