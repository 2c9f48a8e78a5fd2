"""Query string -> :class:`~.query.SearchQuery` (search.html#conformance).

Parameters the server does not know or does not support are ignored and reported
in ``ignored`` (search.html#errors: "servers SHOULD ignore" them), or refused with
``strict=True`` (``Prefer: handling=strict``). A malformed value and an unknown
modifier are always refused (search.html#modifiers: "servers SHALL reject any
search request that contains a search parameter with an unsupported modifier").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from ..errors import Invalid
from . import results
from .blinding import BlindIndex, blinded_values
from .catalog import parameters_for
from .definitions import TABLES
from .parameters import (
    HTTP_PARAMS,
    RESULT_PARAMS,
    UNSUPPORTED_PARAMS,
    SearchParameter,
)
from .query import Chain, Clause, Condition, Has, Include, Missing, SearchQuery
from .text import split_escaped
from .types import HANDLERS, ParseContext
from .types.reference import TYPE_MODIFIER

#: Modifiers defined by search.html#modifiers that this server does not implement.
_UNSUPPORTED_MODIFIERS = frozenset({"in", "not-in", "above", "below", "type"})


def _clause(resource_type: str, key: str, raw: str, ctx: ParseContext) -> Clause:
    name, _, modifier_text = key.partition(":")
    param = parameters_for(resource_type)[name]
    modifier = modifier_text or None
    handler = HANDLERS[param.type]
    allowed = modifier is None or modifier in handler.modifiers or (
        param.type == "reference" and TYPE_MODIFIER.match(modifier) is not None
    )
    if not allowed:
        kind = "Unsupported" if modifier in _UNSUPPORTED_MODIFIERS else "Unknown"
        raise Invalid(f"{kind} modifier ':{modifier}' on {param.type} search parameter "
                      f"'{name}'", expression=name)
    if name == "_id" and modifier not in (None, "not"):
        raise Invalid(f"Unsupported modifier ':{modifier}' on '_id'", expression=name)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise Invalid(f"Invalid ':missing' value '{raw}' for search parameter '{name}': "
                          "expected true or false", expression=name)
        return Clause(param, modifier, (Missing(raw == "true"),))
    values = tuple(handler.parse(param, modifier, part, ctx)
                   for part in split_escaped(raw, ","))
    if ctx.blinder is not None:
        values = blinded_values(param, modifier, values, ctx.blinder)
    return Clause(param, modifier, values)


class _NotApplicable(Exception):
    """A parameter (or a link of a chain) this server cannot apply: ignored and
    reported, or refused under ``Prefer: handling=strict``."""


def _reference_param(resource_type: str, name: str, key: str) -> SearchParameter:
    param = parameters_for(resource_type).get(name)
    if param is None:
        raise _NotApplicable(f"unknown search parameter '{name}' for {resource_type} in '{key}'")
    if param.type != "reference":
        raise Invalid(f"Search parameter '{name}' of {resource_type} is a {param.type}, "
                      "not a reference, and cannot be chained", expression=key)
    return param


def _condition(resource_type: str, key: str, raw: str, ctx: ParseContext,
               full_key: str) -> Condition:
    """One parameter, possibly chained (``a.b``) or reverse-chained (``_has:``), on
    ``resource_type``. Recursive: a chain may continue through several references."""
    if key.startswith("_has:"):
        parts = key.split(":", 3)
        if len(parts) != 4 or not all(parts):
            raise Invalid(f"Invalid '_has' parameter '{full_key}': expected "
                          "_has:Type:reference:parameter", expression=full_key)
        _, source, ref_name, rest = parts
        if source not in TABLES:
            raise _NotApplicable(f"resources of type '{source}' are not held by this server")
        param = _reference_param(source, ref_name, full_key)
        if param.targets and resource_type not in param.targets:
            raise Invalid(f"{source}.{ref_name} cannot point to {resource_type}",
                          expression=full_key)
        return Has(resource_type, source, param, _condition(source, rest, raw, ctx, full_key))
    head, dot, rest = key.partition(".")
    if not dot:
        name = key.partition(":")[0]
        if name not in parameters_for(resource_type):
            raise _NotApplicable(f"unknown search parameter '{name}' for {resource_type}")
        return _clause(resource_type, key, raw, ctx)
    name, _, type_modifier = head.partition(":")
    param = _reference_param(resource_type, name, full_key)
    if type_modifier:
        if param.targets and type_modifier not in param.targets:
            raise Invalid(f"{resource_type}.{name} cannot point to {type_modifier}",
                          expression=full_key)
        targets: tuple[str, ...] = (type_modifier,)
    else:
        targets = param.targets or tuple(TABLES)
    held = [t for t in targets if t in TABLES]
    if not held:
        raise _NotApplicable(f"'{name}' points to resources this server does not hold")
    inner: list[tuple[str, Condition]] = []
    reasons: list[str] = []
    for target in held:
        try:
            inner.append((target, _condition(target, rest, raw, ctx, full_key)))
        except _NotApplicable as exc:
            reasons.append(str(exc))
    if not inner:
        raise _NotApplicable("; ".join(reasons))
    return Chain(param, tuple(inner))


@dataclass
class _Results:
    """The result parameters seen so far; a repeated one replaces the earlier value."""

    count: int
    sort: tuple[tuple[str, bool], ...] = ()
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)

    def take(self, resource_type: str, key: str, raw: str, max_count: int,
             skip: Callable[[str, str], None]) -> str | None:
        """Record one result parameter; the value to report as applied, None if not."""
        name = key.partition(":")[0]
        if name == "_count":
            self.count = results.parse_count(raw, max_count)
            return str(self.count)
        if name == "_sort":
            keys, rejected = results.parse_sort(resource_type, raw)
            for bad in rejected:
                skip("_sort", f"cannot sort on '{bad}'")
            self.sort = tuple(keys)
            return ",".join(("-" if d else "") + n for n, d in keys) or None
        if name == "_total":
            self.total = results.parse_choice(name, raw, results.TOTALS)
        elif name == "_summary":
            self.summary = results.parse_choice(name, raw, results.SUMMARIES)
        elif name == "_elements":
            self.elements = results.parse_elements(raw)
        elif name == "_include":
            self.includes.append(results.parse_include(key, raw))
        elif name == "_revinclude":
            self.revincludes.append(results.parse_include(key, raw))
        else:
            skip(key, "this parameter is not supported")
            return None
        return raw


def parse_query(
    resource_type: str,
    items: Sequence[tuple[str, str]],
    *,
    tz: tzinfo,
    base_url: str = "",
    strict: bool = False,
    default_count: int = 20,
    max_count: int = 1000,
    now: datetime | None = None,
    blinder: BlindIndex | None = None,
) -> SearchQuery:
    """Parse search parameters (in request order) for a search on ``resource_type``.

    ``now`` fixes the clock for ``ap`` on dates (search.html#prefix); by default it is
    the current time. ``_format`` and ``_pretty`` belong to the HTTP layer and are
    neither applied nor reported. ``blinder`` turns identity numbers and telecom
    values into the blind indexes the database holds (search/blinding.py).
    """
    ctx = ParseContext(tz, base_url, now or datetime.now(UTC), blinder)
    params = parameters_for(resource_type)
    clauses: list[Clause] = []
    ignored: list[tuple[str, str]] = []
    applied: list[tuple[str, str]] = []
    res = _Results(count=min(default_count, max_count))

    def skip(key: str, reason: str) -> None:
        if strict:
            raise Invalid(f"Search parameter '{key}' cannot be used: {reason}", expression=key)
        ignored.append((key, reason))

    for key, raw in items:
        if "\x00" in key or "\x00" in raw:
            # Criteria come from a URL, a form body, If-None-Exist or a Bundle entry;
            # no parameter or value holds a NUL, and PostgreSQL cannot compare one.
            raise Invalid(f"Search parameter '{key}' holds a NUL character (%00)",
                          expression=key.replace("\x00", "\ufffd"))
        name = key.partition(":")[0]
        if name in HTTP_PARAMS:
            continue
        if name in RESULT_PARAMS:
            value = res.take(resource_type, key, raw, max_count, skip)
            if value is not None:
                applied.append((key, value))
        elif name in UNSUPPORTED_PARAMS:
            skip(key, "this parameter is not supported")
        elif name not in params and "." not in key and name != "_has":
            skip(key, f"unknown search parameter for {resource_type}")
        elif raw == "":
            skip(key, "empty value")
        else:
            try:
                clauses.append(_condition(resource_type, key, raw, ctx, key))
            except _NotApplicable as exc:
                skip(key, str(exc))
                continue
            applied.append((key, raw))
    return SearchQuery(
        resource_type,
        clauses=tuple(clauses),
        count=res.count,
        sort=res.sort,
        total=res.total,
        summary=res.summary,
        elements=res.elements,
        includes=tuple(res.includes),
        revincludes=tuple(res.revincludes),
        ignored=tuple(ignored),
        applied=tuple(applied),
    )
