"""Settings: documented defaults, then environment variables, then explicit values.

Every environment variable the server reads is listed here and in the README.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class Settings:
    # MongoDB connection. Unset URI: `fhirserver serve` starts the embedded FerretDB.
    mongodb_uri: str | None = None  # MONGODB_URI
    mongodb_db: str = "fhir"  # MONGODB_DB
    # Multi-document transactions: "auto" uses them when the server is a replica set
    # or sharded cluster; "off" always uses the journalled compensating unit of work.
    mongodb_transactions: str = "auto"  # FHIR_MONGODB_TRANSACTIONS
    # Public base URL used in fullUrl, Location and links; empty = from the request.
    base_url: str = ""  # FHIR_BASE_URL
    # Request limits.
    max_body_bytes: int = 16 * 1024 * 1024  # FHIR_MAX_BODY_BYTES
    max_bundle_entries: int = 1000  # FHIR_MAX_BUNDLE_ENTRIES
    # JSON objects and arrays nested deeper than this in a body or a resource get 400.
    max_json_depth: int = 64  # FHIR_MAX_JSON_DEPTH
    # Search paging.
    default_count: int = 20  # FHIR_DEFAULT_COUNT
    max_count: int = 1000  # FHIR_MAX_COUNT
    # A search no index can answer (no patient, code, identifier, id...) is refused
    # with 400 too-costly once its type holds more records than this.
    scan_limit: int = 2000  # FHIR_SCAN_LIMIT
    # Time zone used for dates without one, in queries and stored data (IANA name).
    timezone: str = "Asia/Shanghai"  # FHIR_TIMEZONE
    # Embedded database (PostgreSQL behind FerretDB): where it keeps its files, and
    # the FerretDB binary.
    data_dir: Path = field(default_factory=lambda: PROJECT_ROOT / ".data")  # FHIR_DATA_DIR
    ferretdb_bin: str = ""  # FERRETDB_BIN (default: .tools/bin/ferretdb, then PATH)
    # The PostgreSQL database under a FerretDB (libpq URL): the server creates there
    # the GIN indexes FerretDB's query pushdown needs (storage/postgres_indexes.py).
    # Set automatically for the embedded database.
    ferretdb_postgresql_url: str = ""  # FERRETDB_POSTGRESQL_URL
    # The database is the embedded one of ``data_dir``, written by the processes that
    # share that directory alone (set by storage/embedded.py, not configured).
    embedded: bool = False
    # Master patient index: the identifier systems (JSON, see model/identifier_systems.json).
    identifier_systems: str = ""  # FHIR_IDENTIFIER_SYSTEMS
    # Health cards: how long a QR code stays valid, and the key that signs it
    # (unset: a random key kept in the database, shared by every worker).
    card_code_seconds: int = 300  # FHIR_CARD_CODE_SECONDS
    card_signing_key: str = ""  # FHIR_CARD_SIGNING_KEY
    # Master key (base64url of 32 random bytes) that seals the secrets kept in the
    # database and keys the audit chain; never stored in the database. Unset: the
    # key file, created 0600 on first start (default <FHIR_DATA_DIR>/master.key).
    master_key: str = field(default="", repr=False)  # FHIR_MASTER_KEY
    master_key_file: str = ""  # FHIR_MASTER_KEY_FILE
    # Append-only file of signed audit checkpoints (default
    # <FHIR_DATA_DIR>/audit-checkpoints.log); point it at a WORM store.
    audit_checkpoints: str = ""  # FHIR_AUDIT_CHECKPOINTS
    # Authorization: token issuer (default: FHIR_BASE_URL, else http://HOST:PORT),
    # access token lifetime, care relationship lengths.
    auth_issuer: str = ""  # FHIR_AUTH_ISSUER
    token_seconds: int = 3600  # FHIR_TOKEN_SECONDS
    care_hours: int = 24  # FHIR_CARE_HOURS
    break_glass_minutes: int = 60  # FHIR_BREAK_GLASS_MINUTES
    # Identity look-ups outside the caller's care relationships (a Patient search by
    # one identifier, $ihe-pix, $match candidates) each client may make per minute,
    # counted in the database for all workers; more are answered 429. A registration
    # desk stays far below; a harvester of ID numbers does not. 0 refuses them all.
    lookups_per_minute: int = 30  # FHIR_LOOKUPS_PER_MINUTE
    # Browser apps (CORS, Fetch standard): origins allowed to call discovery, the
    # token endpoint and the FHIR API, comma-separated, or "*"; empty = the origins
    # of the registered OAuth clients' redirect URIs (api/cors.py).
    cors_origins: str = ""  # FHIR_CORS_ORIGINS
    # Reverse proxies in front of the server whose X-Forwarded-For/-Proto/-Host are
    # believed (0: none; the client address is the connection's). Behind one TLS
    # proxy set 1, or every sign-in would come from the proxy's address.
    trusted_proxies: int = 0  # FHIR_TRUSTED_PROXIES
    # Bulk Data export (bulk/): how long finished exports' files stay for download,
    # where they are written (default <FHIR_DATA_DIR>/exports; every server process
    # must see the same directory), and the export threads each process runs (0:
    # this process runs none, another does).
    export_retention_minutes: int = 60  # FHIR_EXPORT_RETENTION_MINUTES
    export_dir: str = ""  # FHIR_EXPORT_DIR
    export_threads: int = 1  # FHIR_EXPORT_THREADS
    # `fhirserver import`: processes writing groups side by side (0: one per CPU).
    import_jobs: int = 0  # FHIR_IMPORT_JOBS
    # Server.
    host: str = "127.0.0.1"  # FHIR_HOST
    port: int = 8080  # FHIR_PORT
    workers: int = 2  # FHIR_WORKERS
    log_level: str = "info"  # FHIR_LOG_LEVEL

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in ENV_NAMES:
                continue  # set by the server itself
            raw = env.get(ENV_NAMES[f.name])
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def issuer(self) -> str:
        """The authorization server's issuer: also the audience of its tokens."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return (self.auth_issuer or self.base_url or f"http://{host}:{self.port}").rstrip("/")

    @property
    def audiences(self) -> tuple[str, ...]:
        """The ``aud`` values an app may send: the issuer and, when no public address
        is configured and the server listens on a loopback address, the same port
        under the other loopback names (an app set up with ``http://localhost:8080``
        reaches the server that calls itself ``http://127.0.0.1:8080``)."""
        issuer = self.issuer
        if self.auth_issuer or self.base_url or self.host not in LOOPBACK:
            return (issuer,)
        return (issuer, *(f"http://{name}:{self.port}" for name in LOOPBACK_NAMES
                          if f"http://{name}:{self.port}" != issuer))

    @property
    def exports(self) -> Path:
        """Where Bulk Data export files are written."""
        return Path(self.export_dir) if self.export_dir else Path(self.data_dir) / "exports"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


ENV_NAMES: dict[str, str] = {
    "mongodb_uri": "MONGODB_URI",
    "mongodb_db": "MONGODB_DB",
    "mongodb_transactions": "FHIR_MONGODB_TRANSACTIONS",
    "base_url": "FHIR_BASE_URL",
    "max_body_bytes": "FHIR_MAX_BODY_BYTES",
    "max_bundle_entries": "FHIR_MAX_BUNDLE_ENTRIES",
    "max_json_depth": "FHIR_MAX_JSON_DEPTH",
    "default_count": "FHIR_DEFAULT_COUNT",
    "max_count": "FHIR_MAX_COUNT",
    "scan_limit": "FHIR_SCAN_LIMIT",
    "timezone": "FHIR_TIMEZONE",
    "data_dir": "FHIR_DATA_DIR",
    "ferretdb_bin": "FERRETDB_BIN",
    "ferretdb_postgresql_url": "FERRETDB_POSTGRESQL_URL",
    "identifier_systems": "FHIR_IDENTIFIER_SYSTEMS",
    "card_code_seconds": "FHIR_CARD_CODE_SECONDS",
    "card_signing_key": "FHIR_CARD_SIGNING_KEY",
    "master_key": "FHIR_MASTER_KEY",
    "master_key_file": "FHIR_MASTER_KEY_FILE",
    "audit_checkpoints": "FHIR_AUDIT_CHECKPOINTS",
    "auth_issuer": "FHIR_AUTH_ISSUER",
    "token_seconds": "FHIR_TOKEN_SECONDS",
    "care_hours": "FHIR_CARE_HOURS",
    "break_glass_minutes": "FHIR_BREAK_GLASS_MINUTES",
    "lookups_per_minute": "FHIR_LOOKUPS_PER_MINUTE",
    "cors_origins": "FHIR_CORS_ORIGINS",
    "trusted_proxies": "FHIR_TRUSTED_PROXIES",
    "export_retention_minutes": "FHIR_EXPORT_RETENTION_MINUTES",
    "export_dir": "FHIR_EXPORT_DIR",
    "export_threads": "FHIR_EXPORT_THREADS",
    "import_jobs": "FHIR_IMPORT_JOBS",
    "host": "FHIR_HOST",
    "port": "FHIR_PORT",
    "workers": "FHIR_WORKERS",
    "log_level": "FHIR_LOG_LEVEL",
}


#: Environment variables that hold secrets. The database servers the embedded default
#: starts as children never need them, so they do not inherit them: a child's
#: environment is readable in /proc/<pid>/environ for as long as it runs, and goes
#: into its crash reports.
SECRET_VARIABLES = frozenset({"FHIR_MASTER_KEY", "FHIR_CARD_SIGNING_KEY"})


def child_environment(**extra: str) -> dict[str, str]:
    """This process's environment without :data:`SECRET_VARIABLES`, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
    env.update(extra)
    return env


def _coerce(type_name: Any, raw: str) -> Any:
    text = str(type_name)
    if text == "int":
        return int(raw)
    if text == "Path":
        return Path(raw)
    return raw
