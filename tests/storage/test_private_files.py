"""The embedded database's files are the server user's alone (DESIGN.md section 1: a
leaked database is what residents fear; section 5: the embedded FerretDB keeps its
SQLite files in the data directory): directories 0700, files 0600, including those
FerretDB and SQLite create (the child runs with umask 077), the key file and the
audit checkpoints; a data directory from before is tightened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fhirserver import create_app
from fhirserver.config import Settings
from fhirserver.storage.embedded import database

from .test_ferretdb import needs_binary


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
            for p in [root, *root.rglob("*")]}


@needs_binary
def test_the_data_directory_and_everything_in_it_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # an ordinary umask: files would be 0644
    try:
        data = tmp_path / "data"
        (data / "ferretdb").mkdir(parents=True, mode=0o755)
        os.chmod(data, 0o755)
        (data / "ferretdb.log").write_text("from before\n")
        (data / "ferretdb" / "fhir.sqlite-journal").write_text("from before\n")
        with database(Settings(data_dir=data, mongodb_db="fhir")) as live:
            app = create_app(live)
            try:
                # An unauthenticated request is audited: record, checkpoint, key file.
                assert app.test_client().get("/Patient").status_code == 401
                seen = modes(data)
            finally:
                app.extensions["fhirserver"].repo.close()
    finally:
        os.umask(old_umask)
    for name in ("ferretdb.json", "ferretdb.log", "master.key", "audit-checkpoints.log"):
        assert name in seen, sorted(seen)
    assert any(name.endswith(".sqlite") for name in seen), sorted(seen)
    assert any(name.endswith(".sqlite-wal") for name in seen), sorted(seen)
    loose = {name: oct(mode) for name, mode in seen.items()
             if mode != (0o700 if (data / name).is_dir() else 0o600)}
    assert loose == {}
