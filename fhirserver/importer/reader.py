"""Reading import files: Bundles (.json, .json.gz) and NDJSON (.ndjson, .ndjson.gz).

Yields *groups*: the entries of one Bundle, or a chunk of NDJSON lines, each entry
a (fullUrl, request url, resource) triple. A group is imported all or nothing.
Numbers are read exactly (model/json_text.py), as the REST API reads them.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..model import json_text

NDJSON_CHUNK = 1000


@dataclass(frozen=True)
class SourceEntry:
    full_url: str | None
    request_url: str | None
    resource: dict[str, Any]


class ImportFileError(Exception):
    pass


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def is_ndjson(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".ndjson", ".jsonl"))


def expand(paths: list[Path]) -> list[Path]:
    """Files named, and the importable files inside folders named."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(
                f for f in p.rglob("*")
                if f.is_file() and f.name.lower().endswith((".json", ".json.gz", ".ndjson",
                                                             ".ndjson.gz", ".jsonl", ".jsonl.gz"))
            )
        else:
            out.append(p)
    return out


def read_groups(path: Path) -> Iterator[list[SourceEntry]]:
    try:
        with _open(path) as fh:
            if is_ndjson(path):
                yield from _ndjson(fh, path)
                return
            data = json_text.loads(fh.read())
    except (OSError, EOFError, ValueError) as exc:
        raise ImportFileError(f"{path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ImportFileError(f"{path}: not a JSON object")
    if data.get("resourceType") != "Bundle":
        yield [SourceEntry(None, None, data)]
        return
    entries: list[SourceEntry] = []
    for entry in data.get("entry") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
        if request.get("method") == "DELETE":
            continue
        entries.append(SourceEntry(entry.get("fullUrl"), request.get("url"), entry["resource"]))
    yield entries


def _ndjson(fh: IO[bytes], path: Path) -> Iterator[list[SourceEntry]]:
    chunk: list[SourceEntry] = []
    for number, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            resource = json_text.loads(line)
        except ValueError as exc:
            raise ImportFileError(f"{path}:{number}: not JSON: {exc}") from exc
        if isinstance(resource, dict):
            chunk.append(SourceEntry(None, None, resource))
        if len(chunk) >= NDJSON_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
