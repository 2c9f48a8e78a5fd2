"""Optimistic locking under real concurrency (FHIR R4 http.html#concurrency).

Two clients update the same version at the same moment, both with If-Match: the
database's compare-and-set lets exactly one win; the other gets 412 and nothing of
its change is stored.
"""

from __future__ import annotations

import threading

from tests import factories as f
from tests.factories import patient

ROUNDS = 8


def _race(app, url: str, bodies: list[dict], headers: dict[str, str]) -> list[int]:
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = [0] * len(bodies)

    def run(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        r = client.put(url, json=bodies[i], headers=headers, content_type="application/fhir+json")
        statuses[i] = r.status_code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_concurrent_if_match_updates_exactly_one_wins_http_concurrency(app, fhir):
    created = fhir.create(patient())
    rid = created["id"]
    for round_ in range(ROUNDS):
        current = fhir.get(f"Patient/{rid}").get_json()
        version = current["meta"]["versionId"]
        bodies = [{**current, "name": [{"family": f"writer-{round_}-{i}"}]} for i in range(2)]
        statuses = _race(app, f"/Patient/{rid}", bodies, {"If-Match": f'W/"{version}"'})
        assert sorted(statuses) == [200, 412], statuses
        after = fhir.get(f"Patient/{rid}").get_json()
        assert after["meta"]["versionId"] == str(int(version) + 1)
        winner = statuses.index(200)
        assert after["name"][0]["family"] == f"writer-{round_}-{winner}"
    history = fhir.get(f"Patient/{rid}/_history?_count=100").get_json()
    assert len(history["entry"]) == ROUNDS + 1


def test_concurrent_updates_without_if_match_all_land_as_versions(app, fhir):
    """Without If-Match nobody loses: each update becomes its own version."""
    created = fhir.create(patient())
    rid = created["id"]
    bodies = [{**created, "name": [{"family": f"w{i}"}]} for i in range(4)]
    statuses = _race(app, f"/Patient/{rid}", bodies, {})
    assert statuses == [200] * 4
    history = fhir.get(f"Patient/{rid}/_history").get_json()
    assert [e["response"]["etag"] for e in history["entry"]] == [f'W/"{v}"' for v in range(5, 0, -1)]


def test_a_writer_stalled_past_its_claim_leaves_the_version_another_wrote_http_vread(
        app, fhir, monkeypatch):
    """R4 http.html#vread: every version written stays readable. A writer that stalls
    between claiming version n+1 and writing it has its claim cleared as an orphan by
    the next writer (after ORPHAN_AGE, here none), who writes version n+1; when the
    stalled one wakes, its write fails, and it gives back its own claim only, not the
    version the other wrote."""
    from datetime import timedelta

    from fhirserver.storage import unit_of_work

    monkeypatch.setattr(unit_of_work, "ORPHAN_AGE", timedelta(0))
    pid = fhir.create(f.patient("P"))["id"]
    obs = fhir.create(f.observation(pid))
    claimed, resume = threading.Event(), threading.Event()
    claim = unit_of_work.UnitOfWork._claim

    def stalling_claim(self, w, session):  # the real claim, then a stall in thread "A"
        claim(self, w, session)
        if threading.current_thread().name == "A" and not claimed.is_set():
            claimed.set()
            resume.wait(30)

    monkeypatch.setattr(unit_of_work.UnitOfWork, "_claim", stalling_claim)
    answers = {}

    def stalled() -> None:
        answers["a"] = app.test_client().put(
            f"Observation/{obs['id']}", json=dict(obs, status="amended"),
            headers={"Content-Type": "application/fhir+json"})

    a = threading.Thread(target=stalled, name="A")
    a.start()
    assert claimed.wait(30)
    b = fhir.put(f"Observation/{obs['id']}", dict(obs, status="cancelled"))
    assert b.status_code == 200 and b.get_json()["meta"]["versionId"] == "2"
    resume.set()
    a.join(60)
    assert answers["a"].status_code in (200, 409, 412), answers["a"].get_json()
    second = fhir.get(f"Observation/{obs['id']}/_history/2")
    assert second.status_code == 200, second.get_json()
    assert second.get_json()["status"] == "cancelled"


def test_two_sharing_choices_set_at_once_both_stay(app, fhir):
    """DESIGN.md section 1 (a patient's sharing choices): a patient who sets one
    choice on one device while another is set elsewhere keeps both; each POST of
    $consent changes the choices it names and no other, however the two interleave."""
    flags = ("restrictSensitive", "optOut", "shareWithFamily")
    for round_ in range(ROUNDS):
        pid = fhir.create(patient(f"Chooser{round_}"))["id"]
        barrier = threading.Barrier(len(flags))
        statuses: list[int] = []

        def choose(name: str, pid: str = pid, barrier: threading.Barrier = barrier,
                   statuses: list[int] = statuses) -> None:
            client = app.test_client()
            barrier.wait()
            r = client.post(f"Patient/{pid}/$consent", json={
                "resourceType": "Parameters",
                "parameter": [{"name": name, "valueBoolean": True}]},
                content_type="application/fhir+json")
            statuses.append(r.status_code)

        threads = [threading.Thread(target=choose, args=(name,)) for name in flags]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * len(flags)
        kept = {p["name"]: p["valueBoolean"]
                for p in fhir.get(f"Patient/{pid}/$consent").get_json()["parameter"]}
        assert kept == dict.fromkeys(flags, True), round_


def test_sharing_choices_set_after_the_patient_was_deleted_are_not_kept(app, fhir):
    """DESIGN.md section 1: a deleted person's choices are not the next person's at the
    id. A $consent POST that arrives once the Patient is deleted (a request in flight
    across the delete) finds it gone (404) and stores nothing for a newcomer
    registered at the id; the delete forgets the choices under the same hold as a
    change, so one that was already running ends before they are forgotten."""
    from tests.api.test_deleted_ids import newcomer_at

    pid = fhir.create(patient("Leaving"))["id"]
    assert fhir.delete(f"Patient/{pid}").status_code == 200
    r = fhir.post(f"Patient/{pid}/$consent", {
        "resourceType": "Parameters", "parameter": [{"name": "optOut", "valueBoolean": True}]})
    assert r.status_code == 404, r.get_json()
    newcomer_at(fhir, pid)
    kept = {p["name"]: p["valueBoolean"]
            for p in fhir.get(f"Patient/{pid}/$consent").get_json()["parameter"]}
    assert kept["optOut"] is False


def test_sharing_choices_of_an_unknown_patient_are_not_kept(fhir):
    """A $consent POST for an id that holds no Patient stores nothing a Patient
    registered at the id later would take for its own: 404."""
    r = fhir.post("Patient/never-registered/$consent", {
        "resourceType": "Parameters", "parameter": [{"name": "optOut", "valueBoolean": True}]})
    assert r.status_code == 404, r.get_json()


def _choices(fhir, pid: str) -> dict[str, bool]:
    return {p["name"]: p["valueBoolean"]
            for p in fhir.get(f"Patient/{pid}/$consent").get_json()["parameter"]}


def _choose(client, pid: str, name: str) -> int:
    return client.post(f"Patient/{pid}/$consent", json={
        "resourceType": "Parameters", "parameter": [{"name": name, "valueBoolean": True}]},
        content_type="application/fhir+json").status_code


def test_a_sharing_choice_stalled_past_its_hold_does_not_undo_the_next(app, fhir, monkeypatch):
    """A $consent change holds the patient's choices for a lease; one stalled past it
    between its read and its write (a slow database) finds them taken by the next
    change and writes nothing (409) rather than its stale read over the other's flag."""
    import time
    from datetime import timedelta

    from fhirserver.auth import consent

    app.extensions["fhirserver"].repo.search_claims.lease = timedelta(seconds=1)
    pid = fhir.create(patient("Choosing"))["id"]
    original, calls = consent.load, []

    def stalled(db, patients):
        found = original(db, patients)
        calls.append(1)
        if len(calls) == 1:
            time.sleep(2)  # read, then stalled past the lease
        return found

    monkeypatch.setattr(consent, "load", stalled)
    first: list[int] = []
    t = threading.Thread(target=lambda: first.append(
        _choose(app.test_client(), pid, "restrictSensitive")))
    t.start()
    time.sleep(1.2)
    second = _choose(app.test_client(), pid, "optOut")
    t.join()
    assert (first, second) == ([409], 200)
    assert _choices(fhir, pid) == {"restrictSensitive": False, "optOut": True,
                                   "shareWithFamily": False}


def test_a_sharing_choice_racing_the_patients_delete_is_not_the_newcomers(
        app, fhir, monkeypatch):
    """DESIGN.md section 1: a choice being set while the Patient is deleted and a new
    person registered at the id is not left for the newcomer: the delete forgets the
    choices once the change has written, or the change finds its hold taken and
    writes nothing."""
    from datetime import timedelta

    from fhirserver.auth import consent
    from tests.api.test_deleted_ids import in_thread, newcomer_at

    app.extensions["fhirserver"].repo.search_claims.lease = timedelta(seconds=1)
    pid = fhir.create(patient("Leaving"))["id"]
    original, fired = consent.load, []

    def load_then_delete(db, patients):
        found = original(db, patients)
        if not fired:  # the change has read; the delete and a newcomer come now
            fired.append(1)
            other = app.test_client()
            assert in_thread(lambda: other.delete(f"Patient/{pid}").status_code) == 200
            in_thread(lambda: newcomer_at(fhir, pid))
        return found

    monkeypatch.setattr(consent, "load", load_then_delete)
    assert _choose(app.test_client(), pid, "shareWithFamily") in (200, 409)
    monkeypatch.setattr(consent, "load", original)
    assert _choices(fhir, pid) == {"restrictSensitive": False, "optOut": False,
                                   "shareWithFamily": False}
