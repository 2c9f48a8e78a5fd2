"""Shared helpers for the pure search tests: no app, no database, no socket."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from fhirserver.search.compile import compile_filter
from fhirserver.search.parse import parse_query

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2024, 1, 1, tzinfo=UTC)
BASE = "http://fhir.example.org/fhir"
EXAMPLES = Path("/work/shared/data/spec-examples")


def example(rtype: str, rid: str) -> dict[str, Any]:
    path = EXAMPLES / rtype / f"{rtype}-{rid}.json"
    if not path.exists():
        pytest.skip(f"spec example {path} not available")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def flt(rtype: str, query: str, **kw: Any) -> dict[str, Any]:
    """The compiled filter of a query string such as ``name=peter&gender=male``."""
    items = [tuple(p.split("=", 1)) for p in query.split("&")] if query else []
    q = parse_query(rtype, items, tz=SHANGHAI, base_url=BASE, now=NOW, **kw)  # type: ignore[arg-type]
    return compile_filter(q)
