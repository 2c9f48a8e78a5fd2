"""Which import groups may be written side by side (importer/schedule.py)."""

from __future__ import annotations

from fhirserver.importer.schedule import Schedule, content_digest, group_keys


def keys(*records):
    return group_keys(records, "https://fhir.example/r4")


def patient(pid, *identifiers, **more):
    return ("Patient", pid, {"resourceType": "Patient", "id": pid, **more,
                             "identifier": [{"system": "urn:sid", "value": v} for v in identifiers]})


def observation(oid, subject, **more):
    return ("Observation", oid, {"resourceType": "Observation", "id": oid, "status": "final",
                                 "code": {"text": "x"}, "subject": {"reference": subject}, **more})


def test_a_group_waits_for_the_group_that_writes_what_it_references_references_html():
    """A reference must resolve when it is written (references.html#literal): the
    Observations of a bulk export's second file wait for its Patients' file."""
    s = Schedule()
    s.admit(0, keys(patient("p1")))
    s.admit(1, keys(observation("o1", "Patient/p1")))
    s.admit(2, keys(observation("o2", "https://fhir.example/r4/Patient/p9")))
    assert s.ready() == [0, 2]
    s.start(0)
    s.start(2)
    assert s.ready() == []
    s.finish(0)
    assert s.ready() == [1]


def test_references_inside_a_group_and_to_the_directory_wait_for_nothing():
    s = Schedule()
    s.admit(0, keys(patient("p1"), ("Practitioner", "d1", {"resourceType": "Practitioner"})))
    s.admit(1, keys(patient("p2"), observation("o1", "Patient/p2",
                                               performer=[{"reference": "Practitioner/d1"}])))
    assert s.ready() == [0, 1]


def test_the_same_record_with_other_content_is_written_in_file_order_http_update():
    """Two versions of one record in two groups: the later must stay current."""
    s = Schedule()
    s.admit(0, keys(patient("p1", gender="male")))
    s.admit(1, keys(patient("p1", gender="female")))
    assert s.ready() == [0]


def test_the_same_content_twice_waits_for_nothing():
    """Every Synthea bundle repeats its hospital: those groups still run side by side."""
    hospital = ("Organization", "h1", {"resourceType": "Organization", "id": "h1", "name": "H"})
    same = ("Organization", "h1", {"name": "H", "id": "h1", "resourceType": "Organization"})
    s = Schedule()
    s.admit(0, keys(hospital, patient("p1")))
    s.admit(1, keys(same, patient("p2")))
    assert s.ready() == [0, 1]
    other = ("Organization", "h1", {"resourceType": "Organization", "id": "h1", "name": "H2"})
    s.admit(2, keys(other))
    assert s.ready() == [0, 1]
    for g in (0, 1):
        s.start(g)
        s.finish(g)
    assert s.ready() == [2]
    assert content_digest(hospital[2]) == content_digest(same[2])


def test_patients_sharing_an_identity_number_are_written_in_file_order():
    """The patient index decides between two Patients with one number in file order,
    however the files spell it (the index takes ``abc-1`` and ``ABC 1`` as one)."""
    s = Schedule()
    s.admit(0, keys(patient("p1", "110105")))
    s.admit(1, keys(patient("p2", "110105")))
    s.admit(2, keys(patient("p3", "999999")))
    s.admit(3, keys(patient("p4", "abc-1")))
    s.admit(4, keys(patient("p5", "ＡＢＣ 1")))
    assert s.ready() == [0, 2, 3]


def test_a_reference_to_a_later_file_waits_as_in_file_order_references_html():
    """A bulk-export folder read in name order has Observation.ndjson before
    Patient.ndjson: in file order those references do not resolve, so the Patients'
    group must not be written before the Observations' has been."""
    s = Schedule()
    s.admit(0, keys(observation("o1", "Patient/late")))
    s.admit(1, keys(patient("late")))
    assert s.ready() == [0]
    s.start(0)
    s.finish(0)
    assert s.ready() == [1]


def test_a_contended_group_goes_again_after_every_earlier_group():
    """An identifier one group releases is in no file: a group meeting it is written
    again once every group before it has finished, and later groups that wait for it
    still do."""
    s = Schedule()
    s.admit(0, keys(patient("p1", "x2")))
    s.admit(1, keys(patient("p2", "x1")))
    s.admit(2, keys(observation("o2", "Patient/p2")))
    assert s.ready() == [0, 1]
    s.start(0)
    s.start(1)
    s.again(1)
    assert s.ready() == []
    s.finish(0)
    assert s.ready() == [1]
    s.start(1)
    s.finish(1)
    assert s.ready() == [2]


def test_the_schedule_keeps_only_what_unfinished_groups_hold():
    s = Schedule()
    for g in range(50):
        s.admit(g, keys(patient(f"p{g}", f"n{g}"), observation(f"o{g}", f"Patient/p{g}")))
        s.start(g)
        s.finish(g)
    assert len(s) == 0 and not s._holders
