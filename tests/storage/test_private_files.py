"""The embedded database's files are the server user's alone (DESIGN.md section 1: a
leaked database is what residents fear; section 5: the embedded PostgreSQL and
FerretDB keep their files in the data directory): directories 0700, files 0600,
including those PostgreSQL and FerretDB create (the children run with umask 077), the
key file and the audit checkpoints; a data directory from before is tightened. The
one socket PostgreSQL listens on lives in a 0700 directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fhirserver import create_app
from fhirserver.config import Settings
from fhirserver.storage.embedded import database

from .test_ferretdb import needs_binary


def modes(root: Path) -> dict[str, int]:
    """Permission bits of everything under ``root`` but sockets (a socket's own bits
    do not matter: its directory decides who reaches it)."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode)
            for p in [root, *root.rglob("*")] if not stat.S_ISSOCK(p.lstat().st_mode)}


@needs_binary
def test_the_data_directory_and_everything_in_it_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # an ordinary umask: files would be 0644
    try:
        data = tmp_path / "data"
        (data / "ferretdb").mkdir(parents=True, mode=0o755)
        os.chmod(data, 0o755)
        (data / "ferretdb.log").write_text("from before\n")
        (data / "ferretdb" / "state.json").write_text("from before\n")
        with database(Settings(data_dir=data, mongodb_db="fhir")) as live:
            app = create_app(live)
            try:
                # An unauthenticated request is audited: record, checkpoint, key file.
                assert app.test_client().get("/Patient").status_code == 401
                seen = modes(data)
                seen_dirs = {name: (data / name).is_dir() for name in seen}
            finally:
                app.extensions["fhirserver"].repo.close()
    finally:
        os.umask(old_umask)
    for name in ("ferretdb.json", "ferretdb.log", "master.key", "audit-checkpoints.log",
                 "ferretdb/ferretdb.log", "postgresql/postgresql.log",
                 "postgresql/cluster/PG_VERSION", "postgresql/cluster/global/pg_control",
                 "postgresql/run"):
        assert name in seen, sorted(seen)
    assert seen["postgresql/run"] == 0o700
    loose = {name: oct(mode) for name, mode in seen.items()
             if mode != (0o700 if seen_dirs.get(name) else 0o600)}
    assert loose == {}
