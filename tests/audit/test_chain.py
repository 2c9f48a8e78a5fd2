"""Appends from several processes at once (gunicorn workers) keep one unbroken keyed
chain and one intact line per record in the shared checkpoint file (O_APPEND, one
write(2) per line: POSIX write, "the file offset shall be set to the end of the file
prior to each write")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pymongo import MongoClient

from fhirserver.audit.chain import RECORDS, Keys, event_of, verify
from fhirserver.crypto.master import read_or_create

WRITER = """
import sys
import time
from pathlib import Path
from pymongo import MongoClient
from fhirserver.audit.appender import Appender
from fhirserver.audit.chain import Keys
from fhirserver.crypto.master import read_or_create
uri, name, key_file, checkpoints, who, go = sys.argv[1:7]
keys = Keys.derive(read_or_create(Path(key_file)))
db = MongoClient(uri)[name]
db.command("ping")
appender = Appender(db)
while not Path(go).exists():
    time.sleep(0.001)
for i in range(15):
    appender.append({"resourceType": "AuditEvent", "action": "R", "outcomeDesc": f"{who}-{i}"},
                    [who], keys, Path(checkpoints))
"""


def test_concurrent_appenders_in_several_processes_keep_one_chain(mongo_uri, db_name, tmp_path: Path):
    key_file, checkpoints, go = tmp_path / "master.key", tmp_path / "checkpoints.log", tmp_path / "go"
    keys = Keys.derive(read_or_create(key_file))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, mongo_uri, db_name, str(key_file),
                               str(checkpoints), f"w{n}", str(go)]) for n in range(3)]
    go.touch()
    assert [p.wait(timeout=240) for p in procs] == [0, 0, 0]
    with MongoClient(mongo_uri) as client:
        db = client[db_name]
        report = verify(db, keys, [checkpoints])
        assert report.broken is None and report.checked == 45 and report.checkpoint == 45
        written = sorted(event_of(d)["outcomeDesc"] for d in db[RECORDS].find({}))
    assert written == sorted(f"w{n}-{i}" for n in range(3) for i in range(15))
    assert len(checkpoints.read_text().splitlines()) == 45
