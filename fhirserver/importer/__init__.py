"""Bulk import of Bundle and NDJSON files (`fhirserver import`)."""
