"""WSGI entry point: `gunicorn wsgi:app` (settings from the environment)."""

from fhirserver import create_app

app = create_app()
