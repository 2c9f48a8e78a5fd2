"""fhirserver: a FHIR R4 server for Patient, Observation and DiagnosticReport on MongoDB."""

from __future__ import annotations

from flask import Flask

from .config import Settings
from .version import __version__

__all__ = ["Settings", "__version__", "create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """The WSGI application for one database (DESIGN.md section 4).

    ``settings.mongodb_uri`` must be set: `fhirserver serve` starts the embedded
    FerretDB and sets it when no MongoDB is configured.
    """
    from .api import init_api
    from .api.state import AppState
    from .auth import consent, reach_cache
    from .auth.access import drop_authorship_relationships
    from .storage.repository import Repository

    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    repo = Repository.from_settings(settings)
    # a change another process stored but never noted (a worker killed between the
    # two) is read once by every process: before anything else, so that the others
    # learn of it as soon as the worker started in its place is
    consent.count_lost_change(repo.db)
    reach_cache.count_lost_change(repo.db)
    drop_authorship_relationships(repo.db)
    app.extensions["fhirserver"] = AppState(settings, repo)
    init_api(app)
    if settings.trusted_proxies > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    return app
