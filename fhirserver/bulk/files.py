"""The NDJSON files of an export: one directory per job under the export directory,
readable by the server's user alone (0700 directories, 0600 files), whatever the
umask: they hold patients' records."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z]{1,64}(-error)?\.ndjson$")
_JOB = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def job_dir(root: Path, job_id: str) -> Path:
    if not _JOB.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return root / job_id


def name_of(rtype: str) -> str:
    return f"{rtype}.ndjson"


def path_of(root: Path, job_id: str, name: str) -> Path | None:
    """The file ``name`` of a job, or None for a name no export writes."""
    if not _NAME.match(name) or not _JOB.match(job_id):
        return None
    return root / job_id / name


def open_at(root: Path, job_id: str, name: str, offset: int) -> int:
    """A file descriptor to append to ``name`` from ``offset`` on: what lies past it
    was written after the last checkpoint by a worker that died, and is cut off."""
    directory = job_dir(root, job_id)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    os.ftruncate(fd, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return fd


def remove(root: Path, job_id: str) -> None:
    try:
        shutil.rmtree(job_dir(root, job_id))
    except (FileNotFoundError, ValueError):
        pass


def directories(root: Path) -> list[str]:
    """The jobs that have a directory. Listed before the jobs in the database are
    (a directory is made only after its job is stored), those with no job left are
    leftovers of jobs removed while this process was down."""
    if not root.is_dir():
        return []
    return [p.name for p in root.iterdir() if p.is_dir() and _JOB.match(p.name)]
