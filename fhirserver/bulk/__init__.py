"""Bulk Data export (FHIR Bulk Data Access IG 2.0.0, export.html): the kick-off
parameters (:mod:`.request`), the jobs kept in the database (:mod:`.jobs`), the
files they write (:mod:`.files`) and the work itself, run outside any request by a
thread in each server process (:mod:`.runner`)."""
