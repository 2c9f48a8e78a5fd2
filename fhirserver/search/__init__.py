"""FHIR R4 search, pure part (search.html): query string -> typed query -> MongoDB.

    catalog.parameters_for(type)           the parameter table (definitions.py)
    extract.extract(resource, tz)          index values stored as ``sp`` at write time
    parse.parse_query(type, items, ...)    -> query.SearchQuery (frozen)
    compile.compile_filter / compile_sort

One handler per parameter type in ``types/`` does extraction, value parsing and
condition building for its type. Nothing here does I/O.
"""

from __future__ import annotations

__all__ = ["catalog", "compile", "extract", "parameters", "parse", "query"]
