"""Privacy at rest, proved on a real `fhirserver serve` (issue 12, "Proof").

Basis: PIPL article 51 (personal information handlers take encryption and
de-identification measures; articles 28-29: identity numbers are sensitive personal
information) and DESIGN.md section 1: "a stolen database dump should not reveal who
the patients are". What a backup, a stolen disk or a curious operator with a
database client gets is the data directory: its database files and WAL, its logs,
and every document the database serves. None of them may hold a resident ID, a
passport, a hospital record number, a health card number, a phone or an email in any
form (``tests/privacy_scan.py`` lists the forms); the master key file is the one file
that may, and only it turns the rest back into the values that were written.

The module loads a fresh data directory once, through the HTTP API only: Patients
with those identifiers and telecoms, health cards (card numbers), an update
(history), searches by identifier, phone, telecom and email, a conditional create,
a transaction with a conditional create and a conditional reference, ``$match`` and
``$ihe-pix``, also by a backend client (look-up counts, audit marks), and a search
for a number nobody holds. Every collection is scanned through the wire protocol
while the server runs, every file after it stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from pymongo import MongoClient

from fhirserver.storage.embedded import EmbeddedDatabase
from fhirserver.storage.ferretdb import free_port
from tests.factories import observation
from tests.mpi.numbers import check_char, gb11643
from tests.privacy_scan import (
    KEY_FILES,
    SEPARATORS,
    Hit,
    Secret,
    needles,
    report,
    scan_bytes,
    scan_client,
    scan_tree,
)

pytestmark = pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")),
                                reason="proves the embedded database's files")

SID = "https://fhirserver.example/sid"
RID = f"{SID}/resident-id"
CARD = f"{SID}/health-card"
MRN = f"{SID}/mrn/hospital-1"
PASSPORT = SID + "/passport/{country}"
FHIR_JSON = "application/fhir+json"
KEY_FILE = "master.key"
SERVER_LOG = "server.log"


def resident_id(born: str, male: bool, check: str | None = None, area: str = "110105") -> str:
    """A GB 11643 number for this birth date and sex; with ``check``, the first sequence
    whose check character is that one (an ``X`` tests the lower-case form)."""
    for n in range(1 if male else 2, 999, 2):
        seq = f"{n:03d}"
        if check is None or check_char(area + born + seq) == check:
            return gb11643(area, born, seq)
    raise AssertionError("no sequence gives that check character")


@dataclass
class Person:
    label: str
    resource: dict[str, Any]
    id: str = ""
    secrets: list[Secret] = field(default_factory=list)


def person(label: str, family: str, given: str, gender: str, born: str, *,
           check: str | None = None, passport: tuple[str, str] | None = None,
           mrn: str | None = None, phone: str | None = None, email: str | None = None) -> Person:
    number = resident_id(born.replace("-", ""), gender == "male", check)
    identifiers = [{"system": RID, "value": number}]
    if passport:
        identifiers.append({"system": PASSPORT.format(country=passport[0]), "value": passport[1]})
    if mrn:
        identifiers.append({"system": MRN, "value": mrn})
    telecom = ([{"system": "phone", "value": phone}] if phone else []) + \
        ([{"system": "email", "value": email}] if email else [])
    resource = {"resourceType": "Patient", "gender": gender, "birthDate": born,
                "name": [{"family": family, "given": [given]}], "identifier": identifiers,
                **({"telecom": telecom} if telecom else {})}
    found = [Secret(i["value"], i["system"], f"{label} {i['system'].split('/sid/')[-1]}")
             for i in identifiers]
    found += [Secret(t["value"], t["system"], f"{label} {t['system']}") for t in telecom]
    return Person(label, resource, secrets=found)


PEOPLE = [
    person("patient 1", "Wang", "Fang", "female", "1985-03-12", check="X",
           passport=("CHN", "E48213907"), mrn="MRN-20260417", phone="13912345678",
           email="wang.fang.1985@example.cn"),
    person("patient 2", "Li", "Wei", "male", "1972-11-05", passport=("USA", "561294387"),
           mrn="MRN-20260418", phone="139-8765-4321"),
    person("patient 3", "Chen", "Jing", "female", "2001-06-30", mrn="MRN-20260419",
           phone="+86 137 2468 1357", email="chen.jing.0630@example.cn"),
]
#: created by a conditional create (If-None-Exist) and inside a transaction
CONDITIONAL = person("patient 4", "Zhao", "Lei", "male", "1990-09-09", phone="13655554444")
IN_TRANSACTION = person("patient 5", "Zhou", "Min", "female", "1968-02-29", mrn="MRN-20260420")
#: a phone added by an update (the earlier version stays in the history)
NEW_PHONE = Secret("15011112222", "phone", "patient 1 new phone")
#: searched for, never registered: a search must not leave it behind either
NOBODY = Secret(resident_id("19990101", True), RID, "unregistered resident-id")


# -- the server, as an operator runs it ---------------------------------------------------


def environment(data_dir: Path, port: int, master_key: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MONGODB_URI", "FHIR_MASTER_KEY", "FHIR_MASTER_KEY_FILE")}
    env.update({"FHIR_DATA_DIR": str(data_dir), "FHIR_PORT": str(port), "FHIR_WORKERS": "1"})
    if master_key is not None:
        env["FHIR_MASTER_KEY"] = master_key
    return env


def exe() -> str:
    return str(Path(sys.executable).parent / "fhirserver")


@dataclass
class Server:
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, *args: str) -> dict[str, str]:
        out = subprocess.run([exe(), "token", *args], env=self.env, capture_output=True,
                             text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr
        return {"Authorization": f"Bearer {out.stdout.strip()}"}


def start(data_dir: Path, master_key: str | None = None, log: Path | None = None) -> Server:
    """`fhirserver serve` on ``data_dir``, its stdout and stderr (gunicorn's access
    log among them) in ``log`` (by default a file in the data directory)."""
    port = free_port()
    env = environment(data_dir, port, master_key)
    data_dir.mkdir(mode=0o700, exist_ok=True)
    log = log or data_dir / SERVER_LOG
    with open(log, "ab") as out:
        proc = subprocess.Popen([exe(), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(data_dir, port, proc, env, log)


def wait_up(server: Server, timeout: float = 120) -> bool:
    """True once /metadata answers; False when the server exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            if requests.get(f"{server.url}/metadata", timeout=5).status_code == 200:
                return True
        except (requests.ConnectionError, requests.Timeout):
            pass  # still starting
        time.sleep(0.3)
    stop(server)
    pytest.fail(f"fhirserver serve did not answer in time:\n{server.log.read_text()[-3000:]}")


def stop(server: Server) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode


def copy_data(source: Path, target: Path, with_key: bool) -> Path:
    """The data directory as a backup holds it (sockets and locks of the stopped
    server are not files to copy); the key file only ``with_key``."""
    def ignore(directory: str, names: list[str]) -> list[str]:
        skipped = [n for n in names if not (stat.S_ISREG(os.lstat(Path(directory, n)).st_mode)
                                            or stat.S_ISDIR(os.lstat(Path(directory, n)).st_mode))]
        if not with_key and Path(directory) == source:
            skipped.append(KEY_FILE)
        return skipped

    shutil.copytree(source, target, symlinks=True, ignore=ignore)
    return target


# -- loading through the API --------------------------------------------------------------


class Api:
    def __init__(self, server: Server, auth: dict[str, str]) -> None:
        self.url, self.auth = server.url, auth

    def __call__(self, method: str, path: str, body: Any = None, **headers: str
                 ) -> requests.Response:
        hdrs = {"Accept": FHIR_JSON, **self.auth, **headers}
        if isinstance(body, dict):
            hdrs.setdefault("Content-Type", FHIR_JSON)
            body = json.dumps(body)
        return requests.request(method, f"{self.url}/{path}", data=body, headers=hdrs,
                                timeout=30)

    def ok(self, method: str, path: str, body: Any = None, **headers: str) -> dict[str, Any]:
        r = self(method, path, body, **headers)
        assert r.status_code in (200, 201), f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else {}


def q(system: str, value: str) -> str:
    return f"{system}%7C{requests.utils.quote(value, safe='')}"


def load(server: Server) -> tuple[list[Secret], dict[str, dict[str, Any]]]:
    """Everything the issue lists, through the API; the secrets written and each
    Patient as the operator reads it back."""
    op = Api(server, server.token("--operator", "--scope", "system/*.cruds"))
    lab = Api(server, server.token("--client", "lab-1", "--scope", "system/Patient.rs",
                                   "--organization", "Organization/lab"))
    found: list[Secret] = []
    for p in PEOPLE:
        p.id = op.ok("POST", "Patient", p.resource)["id"]
        found += p.secrets
        card = op.ok("POST", f"Patient/{p.id}/$issue-card")
        number = next(x["valueIdentifier"]["value"] for x in card["parameter"]
                      if x["name"] == "number")
        found.append(Secret(number, CARD, f"{p.label} health-card"))
    first = PEOPLE[0]
    # an update: the version before it stays in the history
    current = op.ok("GET", f"Patient/{first.id}")
    current["telecom"].append({"system": "phone", "value": NEW_PHONE.value})
    op.ok("PUT", f"Patient/{first.id}", current)
    found.append(NEW_PHONE)
    # conditional create: once creating, once finding the one that exists
    rid4 = CONDITIONAL.resource["identifier"][0]["value"]
    for _ in range(2):
        CONDITIONAL.id = op.ok("POST", "Patient", CONDITIONAL.resource,
                               **{"If-None-Exist": f"identifier={RID}|{rid4}"})["id"]
    found += CONDITIONAL.secrets
    # a transaction: conditional create, conditional reference, conditional update
    rid1 = first.resource["identifier"][0]["value"]
    rid5 = IN_TRANSACTION.resource["identifier"][0]["value"]
    new = "urn:uuid:4f0e3a52-9b7d-4c1e-8d2a-6b5f0c9e7a13"
    by_rid1 = {"reference": f"Patient?identifier={RID}|{rid1}"}
    rid2 = PEOPLE[1].secrets[0].value
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": new, "resource": IN_TRANSACTION.resource,
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": f"identifier={RID}|{rid5}"}},
        {"resource": observation(None, subject={"reference": new}),
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": observation(None, code="2345-7", subject=by_rid1),
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {**PEOPLE[1].resource, "active": True},
         "request": {"method": "PUT", "url": f"Patient?identifier={q(RID, rid2)}"}},
    ]}
    answer = op.ok("POST", "", bundle)
    IN_TRANSACTION.id = answer["entry"][0]["response"]["location"].split("/")[1]
    found += IN_TRANSACTION.secrets
    # searches by every kind of value, by the operator and by a backend client
    for secret in found:
        if secret.system in ("phone", "email"):
            op.ok("GET", f"Patient?{secret.system}={requests.utils.quote(secret.value, safe='')}")
            op.ok("GET", f"Patient?telecom={requests.utils.quote(secret.value, safe='')}")
        else:
            op.ok("GET", f"Patient?identifier={q(secret.system, secret.value)}")
    op.ok("POST", "Patient/_search", f"identifier={q(RID, rid1)}",
          **{"Content-Type": "application/x-www-form-urlencoded"})
    op.ok("GET", f"Observation?patient.identifier={q(RID, rid1)}")
    op.ok("GET", f"Patient/$ihe-pix?sourceIdentifier={q(RID, rid1)}")
    op.ok("POST", "Patient/$match", {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": PEOPLE[1].resource}]})
    lab.ok("GET", f"Patient?identifier={q(RID, PEOPLE[2].secrets[0].value)}")
    lab.ok("GET", f"Patient/$ihe-pix?sourceIdentifier={q(RID, rid1)}")
    lab.ok("GET", f"Patient?identifier={q(RID, NOBODY.value)}")
    found.append(NOBODY)
    read = {p.id: op.ok("GET", f"Patient/{p.id}") for p in (*PEOPLE, CONDITIONAL, IN_TRANSACTION)}
    return found, read


@dataclass
class Loaded:
    data_dir: Path
    secrets: list[Secret]
    patients: dict[str, dict[str, Any]]
    key: str
    documents: dict[str, int]
    document_hits: list[Hit]
    file_hits: list[Hit]


def database_uri(data_dir: Path) -> str:
    """The running embedded database, as `fhirserver serve` records it for other
    commands (``storage/embedded.py``)."""
    return str(json.loads((data_dir / "ferretdb.json").read_text())["uri"])


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    data_dir = tmp_path_factory.mktemp("privacy") / "data"
    server = start(data_dir)
    try:
        assert wait_up(server), server.log.read_text()[-3000:]
        found, patients = load(server)
        client: MongoClient[dict[str, Any]] = MongoClient(database_uri(data_dir),
                                                          directConnection=True)
        try:
            document_hits = scan_client(client, needles(found))
            db = client[server.env.get("MONGODB_DB", "fhir")]
            documents = {name: db[name].count_documents({}) for name in db.list_collection_names()}
        finally:
            client.close()
    finally:
        code = stop(server)
    assert code == 0, server.log.read_text()[-3000:]
    file_hits = scan_tree(data_dir, needles(found), exclude=KEY_FILES)  # master.key only
    key = (data_dir / KEY_FILE).read_text().strip()
    yield Loaded(data_dir, found, patients, key, documents, document_hits, file_hits)


# -- the proofs -----------------------------------------------------------------------------


def test_no_identifier_or_telecom_in_any_collection_or_file(loaded: Loaded) -> None:
    """Issue 12 Proof, part 1: no collection (read through the wire protocol, so that
    compressed storage hides nothing) and no file of the data directory (database
    files, WAL, the database's and the server's logs; the key file excepted) holds
    any of the values written, in any form."""
    # the load wrote what the proof is about, the scans read where it went
    assert len(loaded.secrets) >= 20
    assert loaded.documents["Patient"] == 5 and loaded.documents["Observation"] == 2
    assert '"GET /Patient?' in (loaded.data_dir / SERVER_LOG).read_text()  # the access log
    problems = []
    if loaded.document_hits:
        problems.append("documents: " + report(loaded.document_hits))
    if loaded.file_hits:
        problems.append("files: " + report(loaded.file_hits))
    assert not problems, "\n\n".join(problems)


def test_without_the_master_key_nothing_is_readable(loaded: Loaded,
                                                    tmp_path: Path) -> None:
    """Issue 12 Proof, part 2: the database files without the master key. A server
    given another key refuses the database (or, if it starts, shows no value), and
    the documents read straight from the database hold no value in any form."""
    copy = copy_data(loaded.data_dir, tmp_path / "stolen", with_key=False)
    found = needles(loaded.secrets)
    other = secrets.token_urlsafe(32)
    server = start(copy, master_key=other, log=tmp_path / "wrong-key.log")
    try:
        if wait_up(server):
            op = Api(server, server.token("--operator", "--scope", "system/*.cruds"))
            shown = op("GET", "Patient?_count=100")
            assert shown.status_code in (200, 401, 403, 500), shown.text[:500]
            leaked = scan_bytes(shown.content, found, "GET Patient")
            assert not leaked, report(leaked)
        else:
            said = server.log.read_text()
            assert server.proc.returncode != 0 and "master key" in said, said[-3000:]
    finally:
        stop(server)
    assert not (copy / KEY_FILE).exists() or (copy / KEY_FILE).read_text().strip() != loaded.key

    with EmbeddedDatabase(copy) as database:
        client: MongoClient[dict[str, Any]] = MongoClient(database.uri, directConnection=True)
        try:
            hits = scan_client(client, found)
        finally:
            client.close()
    assert not hits, "documents read without the key: " + report(hits)


def test_with_the_master_key_everything_comes_back(loaded: Loaded, tmp_path: Path) -> None:
    """Issue 12 Proof, part 2: the same files with the master key (given as
    FHIR_MASTER_KEY, the key file left behind): every identifier and telecom of every
    Patient reads back whole, as it was written."""
    copy = copy_data(loaded.data_dir, tmp_path / "restored", with_key=False)
    server = start(copy, master_key=loaded.key, log=tmp_path / "restored.log")
    try:
        assert wait_up(server), server.log.read_text()[-3000:]
        op = Api(server, server.token("--operator", "--scope", "system/*.cruds"))
        back = {pid: op.ok("GET", f"Patient/{pid}") for pid in loaded.patients}
    finally:
        stop(server)
    for pid, before in loaded.patients.items():
        assert back[pid].get("identifier") == before.get("identifier"), pid
        assert back[pid].get("telecom") == before.get("telecom"), pid
    values = {SEPARATORS.sub("", x["value"]).upper()
              for p in back.values() for x in p.get("identifier", []) + p.get("telecom", [])}
    written = [s for s in loaded.secrets if s is not NOBODY]
    missing = [s.name for s in written
               if SEPARATORS.sub("", s.value).upper().removeprefix("+86") not in
               {v.removeprefix("+86") for v in values}]
    assert not missing, missing
