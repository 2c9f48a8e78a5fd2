"""The master key lives outside the database (DESIGN.md section 1: a stolen database
dump should not reveal who the patients are): base64url of at least 32 random bytes
(RFC 4648 section 5), sub-keys per purpose by HKDF-SHA256 (RFC 5869), a key file
created 0600 exactly once even when several workers start together."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys

import pytest

from fhirserver.config import Settings
from fhirserver.crypto import MasterKeyError
from fhirserver.crypto.master import MasterKey, decode, key_path, load, read_or_create


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_key_from_the_environment_must_hold_32_bytes():
    assert decode(b64(b"\x01" * 32), "FHIR_MASTER_KEY") == b"\x01" * 32
    assert decode(b64(b"\x01" * 32) + "=", "FHIR_MASTER_KEY") == b"\x01" * 32  # padding optional
    assert decode(b64(b"\xfb\xff" * 24), "k") == b"\xfb\xff" * 24  # url-safe alphabet, longer ok
    with pytest.raises(MasterKeyError, match=r"FHIR_MASTER_KEY holds 31 bytes.*32"):
        decode(b64(b"\x01" * 31), "FHIR_MASTER_KEY")
    with pytest.raises(MasterKeyError, match="FHIR_MASTER_KEY is not base64url"):
        decode("not a key!" * 5, "FHIR_MASTER_KEY")
    with pytest.raises(MasterKeyError):
        load(Settings(master_key="short"))


def test_the_environment_wins_over_the_key_file(tmp_path):
    key = b64(os.urandom(32))
    from_env = load(Settings(master_key=key, data_dir=tmp_path))
    assert from_env.source == "FHIR_MASTER_KEY" and not (tmp_path / "master.key").exists()
    assert from_env.secret == base64.urlsafe_b64decode(key + "=")


def test_the_key_file_is_created_private_and_read_back(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    first = load(settings)
    path = tmp_path / "data" / "master.key"
    assert key_path(settings) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(decode(path.read_text(), "file")) == 32
    again = read_or_create.__wrapped__(path)  # as a new process reads it
    assert again.secret == first.secret and again.kid == first.kid
    assert os.listdir(path.parent) == ["master.key"]  # no temporary left behind


def test_a_configured_key_file_that_is_too_short_is_refused(tmp_path):
    path = tmp_path / "k"
    path.write_text(b64(b"x" * 16))
    with pytest.raises(MasterKeyError, match=f"{path}.*16 bytes"):
        load(Settings(master_key_file=str(path), data_dir=tmp_path))


def test_sub_keys_differ_per_purpose_and_name_nothing_of_the_key():
    master = MasterKey(os.urandom(32), "test")
    a, b = master.derive("one"), master.derive("two")
    assert len(a) == 32 and a != b and master.derive("one") == a
    assert master.secret not in (a, b)
    assert len(master.kid) == 16 and master.kid not in master.secret.hex()
    assert MasterKey(os.urandom(32), "test").kid != master.kid
    assert master.secret.hex() not in repr(master)


RACE = """
import sys, time
from pathlib import Path
from fhirserver.crypto.master import read_or_create
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
print(read_or_create(Path(sys.argv[1])).kid)
"""


def test_workers_starting_at_once_end_up_with_one_key(tmp_path):
    """Several processes create the missing key file at the same moment: one wins."""
    path, go = tmp_path / "keys" / "master.key", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(path), str(go)],
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    try:
        go.touch()
        kids = {p.communicate(timeout=120)[0].strip() for p in procs}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs)
    assert kids == {read_or_create.__wrapped__(path).kid}
    assert os.listdir(path.parent) == ["master.key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
