"""The kick-off request's parameters, checked (export.html#query-parameters), pure.

* ``_outputFormat``: ``application/fhir+ndjson`` (the default), or its
  abbreviations ``application/ndjson`` and ``ndjson``;
* ``_type``: comma-separated types (repeatable); without it, every type the
  client's scopes let it search. A type this server does not store is refused, a
  type the client may not search is 403 (export.html: "the server SHOULD return
  details via a FHIR OperationOutcome resource in an error response");
* ``_since``: an instant with its time zone: only resources changed after it;
* ``_typeFilter``: FHIR search queries, ``Type?params``, comma-separated (a comma
  inside a query is %-encoded once more); a type's resources are exported when they
  match any of its queries, and a type without a query is exported whole;
* ``patient``: Patient- and Group-level, references to the patients whose records
  are wanted (at Group level, of the group's members: the others are not exported).

Any other parameter (``_elements``, ``includeAssociatedData``...) is refused with
400 unless the request says ``Prefer: handling=lenient``, when it is ignored and
the kick-off answer says so (export.html: "If a server does not support a
parameter... the server SHALL return an error... unless handling=lenient").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl

from .. import errors
from ..search.dates import leap_second_read

FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
#: What a general request may carry whatever the operation (http.html#parameters).
GENERAL = frozenset({"_format", "_pretty"})
#: Search result parameters that make no sense inside a ``_typeFilter`` query: the
#: export decides the order, pages and content of what it writes.
NOT_IN_FILTERS = frozenset({"_include", "_revinclude", "_sort", "_count", "_summary",
                            "_elements", "_total", "_contained", "_containedType",
                            "_cursor"})
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")

Query = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ExportRequest:
    level: str  # "system", "patient" or "group"
    types: tuple[str, ...]
    filters: tuple[tuple[str, tuple[Query, ...]], ...] = ()
    since: str | None = None
    patients: tuple[str, ...] | None = None
    output_format: str = FORMATS[0]
    ignored: tuple[str, ...] = ()  # what a lenient request asked for and was not done

    def queries(self, rtype: str) -> tuple[Query, ...]:
        """The searches that select ``rtype``'s resources: its filters, or one
        search for all of them; each with ``_since`` as ``_lastUpdated=gt``."""
        found = dict(self.filters).get(rtype) or ((),)
        since: Query = (("_lastUpdated", f"gt{self.since}"),) if self.since else ()
        return tuple(q + since for q in found)


def _not_supported(message: str, name: str) -> errors.Invalid:
    return errors.Invalid(issues=(errors.Issue(message, code="not-supported",
                                               expression=(name,)),))


def parse(level: str, params: Sequence[tuple[str, str]], *, lenient: bool,
          candidates: Sequence[str], allowed: Callable[[str], bool]) -> ExportRequest:
    """``candidates``: the types this level exports, in the server's order;
    ``allowed``: may the caller search that type."""
    ignored: list[str] = []

    def refuse(message: str, name: str) -> None:
        if not lenient:
            raise _not_supported(message, name)
        ignored.append(message)

    formats = [v for k, v in params if k == "_outputFormat"]
    if len(formats) > 1:
        raise errors.Invalid("_outputFormat may be given once", expression="_outputFormat")
    output_format = formats[0] if formats else FORMATS[0]
    if output_format not in FORMATS:
        raise _not_supported(f"_outputFormat '{output_format}' is not supported: this server "
                             f"writes {FORMATS[0]}", "_outputFormat")

    named = [t.strip() for k, v in params if k == "_type" for t in v.split(",") if t.strip()]
    types: list[str] = []
    for rtype in named:
        if rtype not in candidates:
            refuse(f"_type '{rtype}' is not a type this server exports at "
                   f"{level} level ({', '.join(candidates)})", "_type")
        elif not allowed(rtype):
            raise errors.Forbidden(f"The access token's scopes do not allow searching "
                                   f"{rtype}, which _type asks for", expression="_type")
        elif rtype not in types:
            types.append(rtype)
    if not named:
        types = [t for t in candidates if allowed(t)]
    if not types:
        raise errors.Forbidden("The access token's scopes allow none of the types "
                               "this export would hold")

    sinces = [v for k, v in params if k == "_since"]
    if len(sinces) > 1:
        raise errors.Invalid("_since may be given once", expression="_since")
    since = sinces[0] if sinces else None
    if since is not None:
        if not _INSTANT.match(since):
            raise errors.Invalid(f"_since must be an instant with its time zone, e.g. "
                                 f"2024-01-01T00:00:00Z, not '{since}'", expression="_since")
        try:
            datetime.fromisoformat(leap_second_read(since))
        except ValueError as exc:
            raise errors.Invalid(f"_since '{since}' is no date", expression="_since") from exc

    filters: dict[str, list[Query]] = {}
    for text in (t for k, v in params if k == "_typeFilter" for t in v.split(",")):
        rtype, mark, query = text.strip().partition("?")
        if not mark or not rtype:
            raise errors.Invalid(f"_typeFilter '{text}' is not Type?search-parameters",
                                 expression="_typeFilter")
        if rtype not in types:
            refuse(f"_typeFilter names {rtype}, which this export does not hold", "_typeFilter")
            continue
        pairs = tuple(parse_qsl(query, keep_blank_values=True))
        for name, _ in pairs:
            if name.split(":")[0] in NOT_IN_FILTERS:
                raise errors.Invalid(f"_typeFilter may not use '{name}'",
                                     expression="_typeFilter")
        filters.setdefault(rtype, []).append(pairs)

    patients: list[str] | None = None
    for name, value in params:
        if name == "patient":
            if level == "system":
                refuse("'patient' is a parameter of Patient- and Group-level exports",
                       "patient")
                continue
            pid = value.removeprefix("Patient/")
            if not pid or "/" in pid:
                raise errors.Invalid(f"patient '{value}' is not a Patient reference",
                                     expression="patient")
            patients = [*(patients or []), pid]
        elif name not in {"_outputFormat", "_type", "_since", "_typeFilter", *GENERAL}:
            refuse(f"Parameter '{name}' is not supported by this server's $export", name)
    return ExportRequest(level, tuple(types),
                         tuple((t, tuple(filters[t])) for t in types if t in filters),
                         since, tuple(dict.fromkeys(patients)) if patients is not None else None,
                         output_format, tuple(ignored))
