"""The search parameters of a resource type: its own R4 table (:mod:`.definitions`)
and the ones every resource has (search.html#all), each union parameter given the
parameters it joins. Built once per type and kept, read-only: every search, every
write's index extraction and the CapabilityStatement ask for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

from .definitions import TABLES
from .parameters import COMMON, SearchParameter

_TABLES_WITH_COMMON: dict[str, Mapping[str, SearchParameter]] = {}


def parameters_for(resource_type: str) -> Mapping[str, SearchParameter]:
    """Every search parameter of ``resource_type`` by name, the common ones included.

    Unknown types have only the common parameters (search.html#all).
    """
    return _TABLES_WITH_COMMON.get(resource_type) or _build(resource_type, TABLES)


def _build(
    resource_type: str, tables: Mapping[str, tuple[SearchParameter, ...]]
) -> Mapping[str, SearchParameter]:
    params = {p.name: p for p in (*COMMON, *tables.get(resource_type, ()))}
    for name, param in params.items():
        if param.union:
            params[name] = replace(param, parts=tuple(params[n] for n in param.union))
    table = MappingProxyType(params)
    _TABLES_WITH_COMMON[resource_type] = table
    return table
