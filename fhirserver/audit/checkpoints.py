"""Signed checkpoints of the audit chain's head, kept outside the database.

The keyed chain (:mod:`.chain`) shows a record was altered, but not that the newest
records were deleted and the head moved back: what is left is still a valid chain.
So after every append the appender also writes one line per record to an append-only
file (``FHIR_AUDIT_CHECKPOINTS``, default ``<FHIR_DATA_DIR>/audit-checkpoints.log``,
mode 0600; point it at a write-once store): the database, the record number and MAC,
the time, the key id, and ``sig``, an HMAC-SHA256 (RFC 2104) of those under a key
derived for checkpoints alone. The newest checkpoint is the head: records missing below it
mean the log was cut.

Several worker processes append at once: the file is opened with ``O_APPEND`` and the
lines of one group of records (:mod:`.appender`) are one ``write(2)``, so they land
whole at the end of the file (POSIX: with ``O_APPEND`` the offset is set to the end
before each write, atomically). Lines may arrive slightly out of record order;
readers index them by record number.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..config import Settings

PURPOSE = "audit/checkpoint-mac/v1"
DEFAULT_NAME = "audit-checkpoints.log"
_FIELDS = frozenset({"db", "n", "mac", "at", "kid", "sig"})


def path_of(settings: Settings) -> Path:
    return Path(settings.audit_checkpoints or Path(settings.data_dir) / DEFAULT_NAME).absolute()


def _sign(key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(key, orjson.dumps(body, option=orjson.OPT_SORT_KEYS), hashlib.sha256).hexdigest()


def line(key: bytes, kid: str, db: str, seq: int, mac: str, at: datetime) -> bytes:
    """One checkpoint line (JSON, newline-terminated)."""
    body = {"db": db, "n": seq, "mac": mac, "at": at.isoformat(timespec="milliseconds"),
            "kid": kid}
    return orjson.dumps({**body, "sig": _sign(key, body)}, option=orjson.OPT_SORT_KEYS) + b"\n"


def write(path: Path, key: bytes, kid: str, db: str, marks: Sequence[tuple[int, str]]) -> None:
    """Append the checkpoints of ``marks`` (record number, MAC) to ``path`` (created
    0600): one line per record, all of them in one ``write(2)``."""
    at = datetime.now(UTC)
    data = b"".join(line(key, kid, db, seq, mac, at) for seq, mac in marks)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to the audit checkpoint file {path}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Bad:
    """A checkpoint line that is not one of ours: where, and the record it names."""

    seq: int
    problem: str


def read(paths: Iterable[Path], key: bytes, kid: str, db: str) -> tuple[dict[int, str], Bad | None]:
    """The MAC each checkpoint names per record number of database ``db``, from every
    line of ``paths`` (missing files hold none), or the first line that is not intact.

    Every line must carry a valid ``sig``, whatever database it names: a line edited
    to name another database would otherwise drop out of the check unnoticed.
    """
    marks: dict[int, str] = {}
    for path in paths:
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            continue
        for number, text in enumerate(raw.splitlines(), 1):
            where = f"checkpoint line {number} of {path}"
            try:
                entry = orjson.loads(text)
            except orjson.JSONDecodeError:
                return marks, Bad(0, f"{where} is not a checkpoint (unreadable)")
            if not isinstance(entry, dict) or set(entry) != _FIELDS or not isinstance(entry["n"], int):
                return marks, Bad(0, f"{where} is not a checkpoint (wrong fields)")
            body = {k: v for k, v in entry.items() if k != "sig"}
            if not hmac.compare_digest(_sign(key, body), str(entry["sig"])):
                problem = (f"{where} was signed under master key {entry['kid']}, not the "
                           f"configured {kid}") if entry["kid"] != kid else \
                    f"{where} does not match its MAC (altered or forged)"
                return marks, Bad(entry["n"], problem)
            if entry["db"] == db:
                marks[entry["n"]] = str(entry["mac"])
    return marks, None
