"""`fhirserver import` with several processes: the same outcome as file order.

Each group is still all or nothing; what the processes change is only which groups
are written at once (importer/schedule.py, importer/parallel.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhirserver.cli import run_import
from fhirserver.storage.repository import Repository

pytestmark = pytest.mark.timeout(300)


def ndjson(path: Path, resources: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))
    return path


def patient(pid: str, **more) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", **more}


def observation(oid: str, pid: str, value: float = 1.0) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2024-05-01T10:00:00Z",
            "valueQuantity": {"value": value, "unit": "/min"}}


def test_a_bulk_export_layout_imports_its_references_in_file_order_bulk_data_ndjson(
        settings, fhir, tmp_path):
    """Bulk Data export files come one per type (Patient.ndjson, Observation.ndjson);
    the Observations' references must resolve (references.html#literal) though two
    processes write: the second file waits for the Patients it references. The
    Patients' file is the larger, so without that wait its Observations would be
    checked before it commits."""
    patients = ndjson(tmp_path / "Patient.ndjson", [patient(f"bp{i}") for i in range(400)])
    observations = [ndjson(tmp_path / f"Observation.{n}.ndjson",
                           [observation(f"bo{n}-{i}", f"bp{i % 3}") for i in range(n, 6, 3)])
                    for n in range(3)]
    stats = run_import(settings, [patients, *observations], jobs=2)
    assert stats.problems == []
    assert stats.created["Patient"] == 400 and stats.created["Observation"] == 6
    found = fhir.get("Observation?patient=bp0&_summary=count").get_json()
    assert found["total"] == 2


def test_the_same_hospital_in_two_bundles_written_at_once_is_created_once(
        settings, fhir, tmp_path):
    """Two groups creating one record with the same content at once: one create meets
    the other's primary key, that group is written again and finds it unchanged, as
    a second import of the record in file order would (no version 2, no problem)."""
    hospital = {"resourceType": "Organization", "id": "shared-h", "name": "General"}
    files = [ndjson(tmp_path / f"b{i}.ndjson",
                    [hospital, patient(f"sp{i}", managingOrganization={
                        "reference": "Organization/shared-h"})]) for i in range(4)]
    stats = run_import(settings, files, jobs=2)
    assert stats.problems == []
    assert stats.created["Organization"] == 1 and stats.unchanged["Organization"] == 3
    assert stats.created["Patient"] == 4
    r = fhir.get("Organization/shared-h/_history").get_json()
    assert [e["resource"]["meta"]["versionId"] for e in r["entry"]] == ["1"]


def test_two_versions_of_one_record_keep_the_later_one_current_http_update(
        settings, fhir, tmp_path):
    """The later file's content is the current version (http.html#update), whichever
    process writes it."""
    first = ndjson(tmp_path / "1.ndjson", [patient(f"vp{i}") for i in range(120)]
                   + [patient("twice", gender="male")])
    second = ndjson(tmp_path / "2.ndjson", [patient("twice", gender="other")])
    stats = run_import(settings, [first, second], jobs=2)
    assert stats.problems == []
    r = fhir.get("Patient/twice").get_json()
    assert r["gender"] == "other" and r["meta"]["versionId"] == "2"


def test_a_record_of_a_patient_with_nothing_recorded_that_exists_is_updated_not_doubled(
        settings, fhir, tmp_path):
    """An import presumes the records of a patient with nothing recorded to be new,
    and reads none of them by id. A record filed under another patient before exists
    all the same: its create meets the primary key, nothing of the group is written,
    and the group is written again reading every record, so the record is updated
    (version 2, now the new patient's) and no group is lost."""
    run_import(settings, [ndjson(tmp_path / "a.ndjson",
                                 [patient("pa"), observation("moved", "pa", 1.0)])])
    stats = run_import(settings, [ndjson(tmp_path / "b.ndjson",
                                         [patient("pb"), observation("moved", "pb", 2.0),
                                          observation("fresh", "pb", 3.0)])])
    assert stats.problems == []
    assert stats.updated["Observation"] == 1 and stats.created["Observation"] == 1
    r = fhir.get("Observation/moved").get_json()
    assert r["meta"]["versionId"] == "2" and r["subject"]["reference"] == "Patient/pb"
    assert fhir.get("Observation?patient=pb&_summary=count").get_json()["total"] == 2
    assert fhir.get("Observation?patient=pa&_summary=count").get_json()["total"] == 0


def test_a_parallel_import_writes_what_one_process_writes(settings, tmp_path):
    """Counts and stored versions are the same with two processes as with one; and
    an import again of the same files changes nothing."""
    resources = []
    for p in range(40):
        resources.append(patient(f"pp{p}", identifier=[{"system": "urn:mrn", "value": f"m{p}"}]))
        resources += [observation(f"po{p}-{o}", f"pp{p}", o) for o in range(30)]
    files = [ndjson(tmp_path / f"c{i}.ndjson", resources[i * 310:(i + 1) * 310])
             for i in range(4)]
    stats = run_import(settings, files, jobs=2)
    assert stats.problems == []
    assert stats.created["Patient"] == 40 and stats.created["Observation"] == 1200
    again = run_import(settings, files, jobs=2)
    assert again.problems == [] and again.written == 0 and again.kept == 1240
    repo = Repository.from_settings(settings)
    try:
        assert repo.cols.current["Observation"].count_documents({"v": {"$ne": 1}}) == 0
        assert repo.cols.history["Observation"].count_documents({}) == 1200
    finally:
        repo.close()


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("kill_after", [0.0, 2.0])
def test_a_killed_import_leaves_no_worker_behind_and_an_import_again_completes_it(
        settings, tmp_path, kill_after):
    """`kill -9` of an import: its workers end too (they would otherwise wait for work
    forever, holding their connections), each group is whole or absent, and the
    same import again writes the rest. Killed at once, the workers are still starting
    (importing the server's modules): they must not take the process that adopts
    them for the import they work for."""
    import os
    import signal
    import subprocess
    import sys
    import time

    resources = []
    for p in range(60):
        resources.append(patient(f"kp{p}"))
        resources += [observation(f"ko{p}-{o}", f"kp{p}", o) for o in range(40)]
    files = [ndjson(tmp_path / f"k{i}.ndjson", resources[i * 410:(i + 1) * 410])
             for i in range(6)]
    env = {**os.environ, "MONGODB_URI": settings.mongodb_uri, "MONGODB_DB": settings.mongodb_db,
           "FHIR_DATA_DIR": str(settings.data_dir)}
    proc = subprocess.Popen([sys.executable, "-c", "from fhirserver.cli import main; main()", "import", "--jobs", "2",
                             *map(str, files)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        workers = {c for c in children(proc.pid) if "spawn_main" in
                   Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")}
        time.sleep(0.05)
    assert len(workers) == 2, "the import started no workers"
    time.sleep(kill_after)  # 2 s: into the writing of the first groups
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(w) for w in workers)
    stats = run_import(settings, files, jobs=2)
    assert stats.problems == [] and stats.kept == 2460
    repo = Repository.from_settings(settings)
    try:
        assert repo.cols.current["Observation"].count_documents({}) == 2400
        assert repo.cols.history["Observation"].count_documents({}) == 2400
    finally:
        repo.close()


MRN = "https://fhirserver.example/sid/mrn/H1"


def numbered(pid: str, mrn: str) -> dict:
    return patient(pid, identifier=[{"system": MRN, "value": mrn}])


def many(pid: str, prefix: str, n: int = 999) -> list[dict]:
    return [observation(f"{prefix}{i}", pid, i) for i in range(n)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_file_order_outcome_whatever_the_processes(settings, fhir, tmp_path, jobs):
    """What file order decides stays decided by it with two processes, where a small
    later file would otherwise be written before a large earlier one:
    - two spellings of one medical record number: the first Patient keeps it;
    - a number released by an update of an earlier file and taken by a later one
      (no file shows the release: the later group meets it, and is written again
      after the earlier ones);
    - references to a file read later (a bulk-export folder in name order) do not
      resolve;
    - one Bundle entry repeated in two Bundles whose fullUrls name other Patients:
      the later Bundle's reading is the current version."""
    files = [
        ndjson(tmp_path / "1.ndjson", [numbered("na", "abc-1"), *many("na", "nao")]),
        ndjson(tmp_path / "2.ndjson", [numbered("nb", "ABC 1")]),
        ndjson(tmp_path / "3.ndjson", [numbered("r1", "X1")]),
        ndjson(tmp_path / "4.ndjson", [numbered("r1", "X2"), *many("r1", "ro")]),
        ndjson(tmp_path / "5.ndjson", [numbered("r2", "X1")]),
        ndjson(tmp_path / "6.ndjson", many("fp", "fo", 300)),
        ndjson(tmp_path / "7.ndjson", [patient("fp")]),
    ]
    same = {**observation("uo", ""),
            "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}}
    for n, (pid, extra) in enumerate((("u1", 600), ("u2", 0)), start=8):
        entries = [{"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                    "resource": patient(pid)},
                   {"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
                    "resource": same}, *({"resource": r} for r in many(pid, "uo-", extra))]
        path = tmp_path / f"{n}.json"
        path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                    "entry": entries}))
        files.append(path)
    stats = run_import(settings, files, jobs=jobs)
    assert fhir.get("Patient/na").status_code == 200
    assert fhir.get("Patient/nb").status_code == 404
    assert fhir.get("Patient/r2").status_code == 200
    assert fhir.get("Observation/fo0").status_code == 404
    assert stats.created["Observation"] == 999 + 999 + 600 + 1
    assert fhir.get("Observation/uo").get_json()["subject"]["reference"] == "Patient/u2"
