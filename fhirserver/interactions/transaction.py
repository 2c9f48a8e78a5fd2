"""batch and transaction Bundles at the base URL (R4 http.html#transaction).

transaction: all or nothing. Entries are processed in the spec's order (DELETE,
POST, PUT/PATCH, then GET/HEAD), ``urn:uuid:`` fullUrls of new resources become the
ids the server assigns and every reference to them is rewritten, conditional
references (``Patient?identifier=...``) are resolved, and the writes are committed
in one unit of work. Any failure answers with that entry's error and writes nothing.

batch: every entry on its own; a failing entry reports its error in its response.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

from .. import errors
from ..model.references import is_conditional_reference, rewrite_references
from ..model.types import SUPPORTED_TYPES
from ..storage.indexing import instant
from ..storage.search_claims import ClaimBusy
from ..storage.unit_of_work import InFlight, VersionConflict
from . import write
from .bundles import bundle
from .conditional import claim_criteria, single_match
from .context import Context, Planner, Result, run_single
from .dispatch import Target, parse_url, read_entry, write_entry
from .write import new_id

#: Retry jitter from its own generator: the global one is the caller's (and
#: property-based tests replay it).
_JITTER = random.Random()

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 304: "304 Not Modified"}

Entry = tuple[int, str, Target, dict[str, Any], Any]  # index, method, target, request, resource


def _root(index: int, e: str) -> str:
    """A FHIRPath of an entry's resource, rooted at the entry."""
    if e.startswith("Bundle.entry."):
        return f"Bundle.entry[{index}]." + e[len("Bundle.entry."):]
    if e[:1].isupper():  # Type.path -> the entry's resource
        _, dot, rest = e.partition(".")
        return f"Bundle.entry[{index}].resource" + (dot + rest if dot else "")
    return e


def _at(index: int, err: errors.FhirError) -> errors.FhirError:
    """The same error with each FHIRPath rooted at the entry it came from."""
    issues = []
    for issue in err.issues:
        exprs = tuple(_root(index, e) for e in issue.expression) or (f"Bundle.entry[{index}]",)
        issues.append(dataclasses.replace(
            issue, diagnostics=f"Bundle.entry[{index}]: {issue.diagnostics}", expression=exprs
        ))
    return type(err)(issues=issues, headers=err.headers)


def parse_entries(ctx: Context, body: dict[str, Any]) -> list[Entry]:
    raw = body.get("entry", [])
    if not isinstance(raw, list):
        raise errors.Invalid("Bundle.entry must be an array", expression="Bundle.entry")
    limit = ctx.settings.max_bundle_entries
    if len(raw) > limit:
        raise errors.TooLarge(
            f"The Bundle has {len(raw)} entries; this server accepts at most {limit} per request",
            expression="Bundle.entry",
        )
    entries: list[Entry] = []
    for i, entry in enumerate(raw):
        try:
            entries.append(_parse_entry(i, entry, ctx.base_url))
        except errors.FhirError as err:
            raise _at(i, err) from err
    return entries


#: Bundle.entry.request elements that are strings (bundle.html#Bundle.entry.request).
_REQUEST_STRINGS = ("ifNoneMatch", "ifModifiedSince", "ifMatch", "ifNoneExist")


def _parse_entry(i: int, entry: Any, base_url: str) -> Entry:
    if not isinstance(entry, dict):
        raise errors.Invalid("An entry must be an object")
    full_url = entry.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise errors.Invalid(f"fullUrl must be a string, not {type(full_url).__name__}",
                             expression="Bundle.entry.fullUrl")
    request = entry.get("request")
    if not isinstance(request, dict):
        raise errors.Invalid("Each entry needs a request", expression="Bundle.entry.request")
    method = request.get("method")
    url = request.get("url")
    if not isinstance(method, str) or method not in METHODS:
        raise errors.Invalid(f"Unsupported request.method {str(method)[:40]!r}; use one of "
                             + ", ".join(METHODS), expression="Bundle.entry.request.method")
    if not isinstance(url, str) or not url:
        raise errors.Invalid("request.url is required and must be a string",
                             expression="Bundle.entry.request.url")
    for name in _REQUEST_STRINGS:
        value = request.get(name)
        if value is not None and not isinstance(value, str):
            raise errors.Invalid(f"request.{name} must be a string, not "
                                 f"{type(value).__name__}",
                                 expression=f"Bundle.entry.request.{name}")
    return i, method, parse_url(url, base_url), request, entry.get("resource")


def _full_urls(body: dict[str, Any]) -> list[str | None]:
    return [e.get("fullUrl") if isinstance(e, dict) else None for e in body.get("entry", [])]


def _assign_ids(planner: Planner, body: dict[str, Any], entries: list[Entry]) -> dict[str, str]:
    """fullUrl -> "Type/id" for every entry a reference may point at.

    Conditional creates and updates are resolved here, before any write
    (http.html#trules); criteria that match nothing are claimed for the id chosen,
    as a single conditional create claims them.
    """
    urls = _full_urls(body)
    seen: set[str] = set()
    mapping: dict[str, str] = {}
    for index, method, target, request, resource in entries:
        full = urls[index]
        if not full:
            continue
        if full in seen:
            raise _at(index, errors.Invalid(f"fullUrl '{full}' appears more than once"))
        seen.add(full)
        if method == "POST":
            rid = new_id()
            found = None
            if request.get("ifNoneExist"):
                found = _match_or_claim(planner, target.type, request["ifNoneExist"],
                                        "Conditional create", rid)
            mapping[full] = f"{target.type}/{found or rid}"
        elif method == "PUT" and target.id:
            mapping[full] = f"{target.type}/{target.id}"
        elif method == "PUT":
            body_id = resource.get("id") if isinstance(resource, dict) else None
            rid = body_id if isinstance(body_id, str) else new_id()
            found = _match_or_claim(planner, target.type, target.query, "Conditional update", rid)
            mapping[full] = f"{target.type}/{found or rid}"
    return mapping


def _match_or_claim(planner: Planner, rtype: str, query: str, what: str, rid: str) -> str | None:
    found = single_match(planner.ctx, rtype, query, what)
    return found if found is not None else claim_criteria(planner, rtype, query, what, rid)


def _resolver(ctx: Context, mapping: dict[str, str], index: int) -> Callable[[str], str | None]:
    def resolve(ref: str) -> str | None:
        if ref in mapping:
            return mapping[ref]
        if ref.startswith(("urn:uuid:", "urn:oid:")):
            raise _at(index, errors.Invalid(issues=[errors.Issue(
                f"Reference '{ref}' names no entry of this transaction", code="not-found")]))
        if is_conditional_reference(ref):
            rtype, _, query = ref.partition("?")
            if rtype not in SUPPORTED_TYPES:
                return None
            found = single_match(ctx, rtype, query, f"Conditional reference '{ref}'")
            if found is None:
                raise _at(index, errors.PreconditionFailed(
                    f"Conditional reference '{ref}' matches no resource"))
            return f"{rtype}/{found}"
        return None
    return resolve


def _identity(ctx: Context, entry: Entry, mapping: dict[str, str], full: str | None) -> str | None:
    """"Type/id" an entry writes, conditional criteria resolved; None for a new resource
    whose id no other entry can name, and for reads."""
    _, method, target, request, resource = entry
    if method in ("GET", "HEAD"):
        return None
    if full and full in mapping:
        return mapping[full]
    if target.id is not None:
        return f"{target.type}/{target.id}"
    criteria = request.get("ifNoneExist") if method == "POST" else target.query
    if not criteria:
        return None
    found = single_match(ctx, target.type, criteria, f"Conditional {method}")
    if found is None and method == "PUT" and isinstance(resource, dict):
        body_id = resource.get("id")
        found = body_id if isinstance(body_id, str) else None
    return f"{target.type}/{found}" if found else None


def check_overlaps(ctx: Context, body: dict[str, Any], entries: list[Entry],
                   mapping: dict[str, str]) -> None:
    """http.html#trules: "If any resource identities (including resolved identities
    from conditional update/delete) overlap in steps 1-3 (DELETE, POST, PUT/PATCH),
    then the transaction SHALL fail": 400 naming both entries, before any write."""
    urls = _full_urls(body)
    first: dict[str, int] = {}
    by_criteria: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
    for entry in entries:
        index, method, target, request, _ = entry
        criteria = request.get("ifNoneExist") if method == "POST" \
            else target.query if method == "PUT" and target.id is None else None
        if isinstance(criteria, str) and criteria:
            # Two conditional writes of one criteria write the one resource it
            # identifies, whether it exists yet or not.
            key = (target.type, tuple(sorted(parse_qsl(criteria.lstrip("?"),
                                                       keep_blank_values=True))))
            if key in by_criteria:
                earlier = by_criteria[key]
                raise errors.Invalid(issues=[errors.Issue(
                    f"Bundle.entry[{earlier}] and Bundle.entry[{index}] both write the "
                    f"{target.type} that '{criteria[:200]}' identifies; a resource may appear "
                    "only once in a transaction (http.html#trules)",
                    expression=(f"Bundle.entry[{earlier}]", f"Bundle.entry[{index}]"))])
            by_criteria[key] = index
        try:
            identity = _identity(ctx, entry, mapping, urls[index])
        except errors.FhirError as err:
            raise _at(index, err) from err
        if identity is None:
            continue
        if identity in first:
            earlier = first[identity]
            raise errors.Invalid(issues=[errors.Issue(
                f"Bundle.entry[{earlier}] and Bundle.entry[{index}] both write {identity}; a "
                "resource may appear only once in a transaction (http.html#trules)",
                expression=(f"Bundle.entry[{earlier}]", f"Bundle.entry[{index}]"))])
        first[identity] = index


ATTEMPTS = 10


def transaction(ctx: Context, body: dict[str, Any], prefer: str | None) -> dict[str, Any]:
    """All or nothing; planned again from the start when a concurrent write got in
    first (nothing of a failed attempt stays written), except when an entry's
    If-Match says the client wants to know (412)."""
    entries = parse_entries(ctx, body)
    attempts = 1 if any(e[3].get("ifMatch") for e in entries) else ATTEMPTS
    for attempt in range(attempts):
        try:
            return _transaction(ctx, body, entries, prefer)
        except (VersionConflict, ClaimBusy) as exc:
            if attempt + 1 < attempts:
                time.sleep(_JITTER.uniform(0, 0.005 * (attempt + 1)))  # de-synchronise the racers
                continue
            if isinstance(exc, VersionConflict) and not isinstance(exc, InFlight) \
                    and attempts == 1:
                raise errors.PreconditionFailed(
                    f"{exc.write.type}/{exc.write.id} was changed by another request "
                    "(If-Match no longer matches)") from exc
            raise errors.Conflict(f"The transaction met concurrent writes: {exc}") from exc
    raise AssertionError("unreachable")


def _transaction(ctx: Context, body: dict[str, Any], entries: list[Entry],
                 prefer: str | None) -> dict[str, Any]:
    planner = Planner(ctx)
    try:
        mapping = _assign_ids(planner, body, entries)
        check_overlaps(ctx, body, entries, mapping)
        results, later = _plan(planner, body, entries, mapping)
        planner.commit()
    finally:
        planner.release_claims()
    for index, method, target, request, _ in later:
        try:
            results[index] = read_entry(planner, target, request)
        except errors.FhirError as err:
            results[index] = Result(err.status, outcome=err.outcome())
    return bundle("transaction-response",
                  [_response_entry(ctx, results[i], prefer) for i in sorted(results)])


def _plan(planner: Planner, body: dict[str, Any], entries: list[Entry],
          mapping: dict[str, str]) -> tuple[dict[int, Result], list[Entry]]:
    """Every write entry planned in the spec's order; GET and HEAD entries kept for
    after the commit."""
    ctx = planner.ctx
    results: dict[int, Result] = {}
    later: list[Entry] = []
    for entry in sorted(entries, key=lambda e: ORDER[e[1]]):
        index, method, target, request, resource = entry
        if method in ("GET", "HEAD"):
            later.append(entry)
            continue
        try:
            if isinstance(resource, dict) and method != "PATCH":
                resource = rewrite_references(resource, _resolver(ctx, mapping, index))
                full = _full_urls(body)[index]
                if method == "POST" and full in mapping:
                    resource = {**resource, "id": mapping[full].split("/", 1)[1]}
            before, settles = len(planner.checks), len(planner.settles)
            written, referred = len(planner.writes), set(planner.referred)
            results[index] = _create_with_id(planner, target, method, request, resource, mapping,
                                             _full_urls(body)[index])
            planner.checks[before:] = [_located(planner, index, c)
                                       for c in planner.checks[before:]]
            planner.settles[settles:] = [_located(planner, index, c)
                                        for c in planner.settles[settles:]]
            _root_references(planner, index, referred)
            if method == "POST" or (method == "PUT" and target.id is None):
                for w in planner.writes[written:]:  # ids the server chose
                    planner.names[f"{w.type}/{w.id}"] = f"the {w.type} of Bundle.entry[{index}]"
        except errors.FhirError as err:
            raise _at(index, err) if not _rooted(err) else err from err
    return results, later


def _rooted(err: errors.FhirError) -> bool:
    return any(e.startswith("Bundle.entry[") for i in err.issues for e in i.expression)


def _located(planner: Planner, index: int, check: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        known = set(planner.referred)
        try:
            check()
        except errors.FhirError as err:
            raise _at(index, err) from err
        _root_references(planner, index, known)
    return run


def _root_references(planner: Planner, index: int, known: set[str]) -> None:
    """The paths of the references entry ``index`` added to those read again once
    stored (interactions/integrity.py), rooted at the entry: an error names them so."""
    for key in planner.referred.keys() - known:
        planner.referred[key] = _root(index, planner.referred[key])


def _create_with_id(planner: Planner, target: Target, method: str, request: dict[str, Any],
                    resource: Any, mapping: dict[str, str], full_url: str | None) -> Result:
    """POST entries, and conditional PUT entries that create, get the id chosen when
    the fullUrls were mapped: the one the other entries' references now name."""
    if method == "POST" and full_url in mapping:
        rid = mapping[str(full_url)].split("/", 1)[1]
        existing = planner.repo.get(target.type, rid)
        if existing is not None and request.get("ifNoneExist"):
            return Result(200, existing, location=f"{target.type}/{rid}/_history/{existing.version}")
        return write.create(planner, target.type, resource, rid=rid)
    if method == "PUT" and target.id is None and full_url in mapping:
        rid = mapping[str(full_url)].split("/", 1)[1]
        return write.conditional_update(planner, target.type, target.query, resource,
                                        if_match=request.get("ifMatch"), rid=rid)
    return write_entry(planner, target, method, request, resource)


def batch(ctx: Context, body: dict[str, Any], prefer: str | None) -> dict[str, Any]:
    raw = body.get("entry", [])
    if isinstance(raw, list) and len(raw) > ctx.settings.max_bundle_entries:
        parse_entries(ctx, body)  # raises the 413
    entries = raw if isinstance(raw, list) else []
    results: list[Result] = []
    while len(results) < len(entries):
        run = _deletes_from(ctx, entries, len(results))
        if len(run) > 1:
            results += _side_by_side(ctx, run)
        else:
            results.append(_batch_entry(ctx, len(results), entries[len(results)]))
    return bundle("batch-response", [_response_entry(ctx, r, prefer) for r in results])


def _batch_entry(ctx: Context, i: int, entry: Any) -> Result:
    """One batch entry on its own: its result, or its error as a result."""
    try:
        _, method, target, request, resource = _parse_entry(i, entry, ctx.base_url)
        if method in ("GET", "HEAD"):
            return read_entry(Planner(ctx), target, request)
        return run_single(
            ctx, lambda p: write_entry(p, target, method, request, resource),
            retry=not request.get("ifMatch"),
        )
    except errors.FhirError as err:
        err = _at(i, err) if not _rooted(err) else err
        return Result(err.status, outcome=err.outcome())


#: Deletes of batches run side by side at most this many at a time in one process
#: (_side_by_side): each is a unit that every later delete waits for, so concurrent
#: batches share them rather than each adding as many.
SIDE_BY_SIDE = 4
_SLOTS = threading.BoundedSemaphore(SIDE_BY_SIDE)


def _deletes_from(ctx: Context, entries: list[Any], start: int) -> list[tuple[int, Any]]:
    """The entries from ``start`` on that are plain deletes (``DELETE Type/id``, no
    If-Match) of distinct records, as (index, entry)."""
    run: list[tuple[int, Any]] = []
    seen: set[tuple[str, str | None]] = set()
    for i in range(start, len(entries)):
        try:
            _, method, target, request, _ = _parse_entry(i, entries[i], ctx.base_url)
        except errors.FhirError:
            break
        key = (target.type, target.id)
        if method != "DELETE" or target.id is None or target.version is not None \
                or target.history or target.search or target.query \
                or request.get("ifMatch") or key in seen:
            break
        seen.add(key)
        run.append((i, entries[i]))
    return run


def _side_by_side(ctx: Context, run: list[tuple[int, Any]]) -> list[Result]:
    """Deletes of distinct records, run at the same time. Each stored delete waits a
    moment before it looks for referrers again (interactions/integrity.py): one after
    the other, a batch of deletes would wait that long for each. A delete refused
    with 409 (a record that another of these deletes was to remove still refers to
    its target, or a unit of theirs was in flight) runs again, alone, once all have
    ended: deleting a record and what refers to it succeeds in either order, as the
    order of a batch's entries should not matter (R4 http.html#brules)."""
    def one(entry: tuple[int, Any]) -> Result:
        with _SLOTS:
            return _batch_entry(ctx, *entry)

    with ThreadPoolExecutor(min(len(run), SIDE_BY_SIDE)) as pool:
        results = list(pool.map(one, run))
    return [_batch_entry(ctx, *entry) if result.status == 409 else result
            for entry, result in zip(run, results, strict=True)]


def _response_entry(ctx: Context, result: Result, prefer: str | None) -> dict[str, Any]:
    response: dict[str, Any] = {"status": STATUS_TEXT.get(result.status, str(result.status))}
    entry: dict[str, Any] = {}
    stored = result.stored
    if result.location:
        response["location"] = result.location
    if stored is not None:
        entry["fullUrl"] = ctx.url(stored.reference)
        response["etag"] = stored.etag
        response["lastModified"] = instant(stored.last_updated)
    if result.body is not None:
        entry["resource"] = result.body
    elif result.status >= 400 or prefer == "OperationOutcome":
        if result.outcome:
            response["outcome"] = result.outcome
    elif stored is not None and stored.resource is not None and (
        prefer == "representation" or result.status in (200,) and result.location is None
    ):
        entry["resource"] = stored.resource
    entry["response"] = response
    return entry
