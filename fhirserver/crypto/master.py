"""The master key: ``FHIR_MASTER_KEY``, else a key file created on first start.

Format (both sources): base64url (RFC 4648 section 5, padding optional) of at least
32 random bytes, the key size of AES-256 and HMAC-SHA256; anything shorter is
refused. Production keeps it in a KMS or secret store and hands it to every worker
and server of the deployment through ``FHIR_MASTER_KEY``; a single machine can
leave it to the key file (``FHIR_MASTER_KEY_FILE``, default
``<FHIR_DATA_DIR>/master.key``), which the server creates on first start.

Creating the file is atomic: the new key goes into a temporary file opened with
``O_CREAT | O_EXCL`` and mode 0600 beside the final name, which it then gets by
``link(2)``; ``link`` fails when the name already exists, so when several workers
start at once exactly one key wins and every process reads that one. A file never
appears half written.

Nothing uses the master key itself: :meth:`MasterKey.derive` gives each purpose its
own sub-key (HKDF-SHA256, RFC 5869, with the purpose as ``info``), and
:attr:`MasterKey.kid` names the key without revealing it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..config import Settings
from . import MasterKeyError

log = logging.getLogger(__name__)

KEY_BYTES = 32
KEY_FILE = "master.key"
INFO_PREFIX = b"fhirserver/"
GENERATE = ("generate one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\"")


@dataclass(frozen=True)
class MasterKey:
    """The deployment's root secret; ``source`` says where it came from (not the key)."""

    secret: bytes = field(repr=False)
    source: str

    def derive(self, purpose: str, length: int = 32) -> bytes:
        """The sub-key for one purpose (HKDF-SHA256, RFC 5869 section 2)."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                    info=INFO_PREFIX + purpose.encode())
        return hkdf.derive(self.secret)

    @cached_property
    def kid(self) -> str:
        """A public name of the key (16 hex digits of a sub-key of its own): sealed
        values and audit records carry it, so a wrong key is named, not guessed at."""
        return self.derive("key-id", 8).hex()


def decode(text: str, where: str) -> bytes:
    """The key bytes of base64url ``text``; ``where`` names its source in errors."""
    value = text.strip()
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MasterKeyError(f"{where} is not base64url text; {GENERATE}") from exc
    if len(raw) < KEY_BYTES:
        raise MasterKeyError(f"{where} holds {len(raw)} bytes, fewer than the {KEY_BYTES} random "
                             f"bytes a master key needs; {GENERATE}")
    return raw


def key_path(settings: Settings) -> Path:
    """The key file: ``FHIR_MASTER_KEY_FILE``, else ``<FHIR_DATA_DIR>/master.key``."""
    return Path(settings.master_key_file or Path(settings.data_dir) / KEY_FILE).absolute()


def load(settings: Settings) -> MasterKey:
    """The master key these settings name; the key file is created when missing.

    Read once per process and source: the key cannot change under a running server.
    """
    if settings.master_key:
        return _from_environment(settings.master_key)
    return read_or_create(key_path(settings))


@lru_cache(maxsize=8)
def _from_environment(text: str) -> MasterKey:
    return MasterKey(decode(text, "FHIR_MASTER_KEY"), "FHIR_MASTER_KEY")


@lru_cache(maxsize=64)
def read_or_create(path: Path) -> MasterKey:
    """The key in ``path``, written there first (0600, atomically) when it is missing."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=") + b"\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, text)  # 44 bytes: one write
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)
        _sync_directory(path.parent)
    except FileExistsError:
        pass  # another process created it first: everyone uses that key
    except OSError as exc:
        raise MasterKeyError(f"could not create the master key file {path}: {exc}; create it "
                             f"yourself (mode 0600) or set FHIR_MASTER_KEY; {GENERATE}") from exc
    finally:
        os.unlink(temporary)
    return _read(path)


def _read(path: Path) -> MasterKey:
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            text = fh.read(4096)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise MasterKeyError(f"the master key file {path} cannot be read: {exc}") from exc
    if mode & 0o077:
        log.warning("the master key file %s is readable by other users: chmod 600 it", path)
    try:
        value = text.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MasterKeyError(f"the master key file {path} is not base64url text; {GENERATE}") \
            from exc
    return MasterKey(decode(value, f"the master key file {path}"), str(path))


def _sync_directory(directory: Path) -> None:
    """The new name survives a power cut (fsync of the directory, POSIX)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
