"""create, update, patch and delete, plain and conditional (R4 http.html).

Each function plans its write into the planner and returns the Result the client
gets; nothing is written until the planner commits.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jsonpatch
import jsonpointer

from .. import errors
from ..auth.policy import author_key
from ..model import masking
from ..model.care_teams import team_id
from ..model.groups import GROUP
from ..model.types import is_valid_id
from ..mpi.patients import claims, identity_documents, keep_server_owned
from ..storage.indexing import blinded_hash, make_write
from ..storage.records import Stored
from . import integrity
from .conditional import claim_criteria, single_match
from .context import Planner, Result, managed_team
from .disclosure import disclosed, record_of, sees_whole_of
from .rules import check_if_match, check_references, validate


def new_id() -> str:
    return str(uuid.uuid4())


def _claims(planner: Planner, rtype: str, resource: dict[str, Any] | None) -> tuple[str, ...]:
    """The unique identifiers a Patient version holds in the master patient index."""
    if rtype != "Patient":
        return ()
    return tuple(claims(resource, planner.ctx.registry))


def _seen(planner: Planner, current: Stored | None, rtype: str, rid: str) -> Stored | None:
    """The current version if the caller may see it; None (as if it did not exist)
    otherwise, before any precondition can say something about it, and after the
    same database work for an id that does not exist as for a hidden one."""
    if current is None:
        planner.ctx.probe_absent(rtype, rid)
        return None
    return current if planner.ctx.visible(current) else None


def _writer_org(planner: Planner, current: Stored | None) -> str | None:
    """The organisation a record belongs to for consent: whoever wrote it first. An
    update never makes the updater the owner, even of a record that has none
    (imported, or stored before owners were kept)."""
    if current is not None:
        return current.org
    access = planner.ctx.access
    return access.caller.organization if access is not None and access.caller is not None else None


def _author(planner: Planner, current: Stored | None) -> str | None:
    """Who wrote the record first: they keep reach to it (and to nothing else of the
    patient's record: authorship is not a care relationship). Set at creation only."""
    if current is not None:
        return current.by
    access = planner.ctx.access
    return author_key(access.caller) if access is not None else None


def _identity(planner: Planner, rtype: str, old: dict[str, Any] | None,
              new: dict[str, Any] | None, server: bool) -> dict[str, Any] | None:
    """The master patient index's part of a Patient write.

    The health card number is the server's: a client's version keeps the stored
    one whatever it sends (a re-import or a PUT without it must not drop it). And
    identity documents (the registry's uniquely-identifying numbers) are written
    only by registration (the ``registration`` scope): a patient cannot change their
    own resident ID, and nobody else learns from a refused write that a number is
    someone else's.
    """
    if rtype != "Patient" or new is None or server:
        return new
    registry = planner.ctx.registry
    card = registry.by_key("health-card").system
    new = keep_server_owned(new, old, {card})
    if planner.ctx.registrar:
        return new
    changed = identity_documents(new, registry) != identity_documents(old, registry) or \
        set(claims(new, registry)) != set(claims(old, registry))
    if changed:
        raise errors.Forbidden("Identity documents of a Patient (resident ID, passport, permit "
                               "and card numbers) are recorded and changed by registration: "
                               "this needs the 'registration' scope",
                               expression="Patient.identifier")
    return new


def _unmasked(planner: Planner, body: Any, current: Callable[[], Stored | None]) -> Any:
    """The body of a write without what masking put in an answer (http.html#update,
    security-labels.html ``MASKED``): the MASKED label is the server's and never
    stored; a masked identity number that masks the stored value of its system
    (a client sending back what it read) stands for that value, whatever the
    caller's rights, as long as the resource stays in the same patient's record;
    one that masks nothing the record holds is refused (422 at its FHIRPath), since
    a masked value is never stored.

    ``current`` gives the stored version the caller may see (None: none); it is
    asked only when the body carries a masked value."""
    if not isinstance(body, dict):
        return body
    body = masking.unlabelled(body)
    registry = planner.ctx.registry
    if not masking.carries_masks(body, registry):
        return body
    stored = current()
    old = stored.resource if stored is not None and not stored.deleted else None
    if old is not None and record_of(old) != record_of(body):
        # The write moves the resource to another patient's record: the masks stand
        # for nothing there (that patient, or whoever reads their record whole,
        # would read this one's numbers).
        old = None
    restored, forged = masking.restore(body, old, registry)
    if forged:
        raise errors.Unprocessable(issues=[errors.Issue(
            "This identity number is masked (it holds '*') and masks no number the record "
            "holds: a masked value cannot be written; send the whole number, or the mask "
            "the server answered to keep the stored one", code="value", expression=(path,),
        ) for path in forged])
    return restored


def _no_guesses(planner: Planner, rtype: str, body: Any, rid: str | None) -> None:
    """A Patient's identity numbers are written whole only by whom reads them whole.

    Whoever sees them masked sends the masks back (they stand for the stored
    numbers); were a whole number accepted from them when it equals the stored one
    (identity documents unchanged: 200) and refused otherwise (403, :func:`_identity`),
    each PUT would test a guess at the masked digits, unbounded and without a trace
    in the history. So a whole number from them is refused, right or wrong."""
    if rtype != "Patient" or not isinstance(body, dict) or planner.ctx.registrar:
        return
    whole, keep = sees_whole_of(planner.ctx, rid)
    if whole:
        return
    sent = [path for path, system, value in masking.sensitive_values(body, planner.ctx.registry)
            if masking.MASK_CHAR not in value and system not in keep]
    if sent:
        raise errors.Forbidden(
            "Identity documents of a Patient (resident ID, passport, permit and card numbers) "
            "are recorded and changed by registration: this needs the 'registration' scope; "
            "send back the masked values you read to keep them", expression=sent[0])


def _validated(planner: Planner, rtype: str, body: Any, current: Callable[[], Stored | None],
               rid: str | None = None, *, guesses: bool = True) -> dict[str, Any]:
    """``validate`` of the body without its masks (:func:`_unmasked`). Where a mask
    stood for a stored number, a refusal about that number (a resident ID that
    disagrees with a new birthDate, say) names the element but not what the number
    says: the caller sees it masked, and ``The resident ID gives birth date ...``
    would tell them its hidden digits. ``guesses``: check for whole numbers from a
    caller who sees them masked (:func:`_no_guesses`); off for the server's own
    writes and for a body that has been through here already."""
    if guesses:
        _no_guesses(planner, rtype, body, rid)
    hidden = frozenset(masking.masked_paths(body, planner.ctx.registry))
    try:
        return validate(_unmasked(planner, body, current), rtype, planner.ctx)
    except errors.Invalid as exc:
        if not hidden or not any(hidden.intersection(i.expression) for i in exc.issues):
            raise
        raise type(exc)(issues=[
            replace(i, diagnostics="This write disagrees with an identity number the record "
                                   "holds, which is masked to you: ask registration to check it")
            if hidden.intersection(i.expression) else i for i in exc.issues]) from None


def _no_current() -> Stored | None:
    return None


def _location(rtype: str, rid: str, version: int) -> str:
    return f"{rtype}/{rid}/_history/{version}"


def create(
    planner: Planner,
    rtype: str,
    body: Any,
    *,
    if_none_exist: str | None = None,
    rid: str | None = None,
) -> Result:
    """POST Type (http.html#create): the server assigns the id, a body id is ignored.

    With If-None-Exist (http.html#ccreate): one match answers 200 with it and
    writes nothing; several are a 412. With no match the criteria are claimed
    before the write, so that concurrent creates with them make one resource.
    """
    resource = _validated(planner, rtype, body, _no_current)
    what = "Conditional create"
    if if_none_exist:
        found = single_match(planner.ctx, rtype, if_none_exist, what)
        if found is not None:
            return _existing(planner, rtype, found)
    planner.ctx.check_write(rtype, "create", None, resource)
    resource = _identity(planner, rtype, None, resource, server=False)  # type: ignore[assignment]
    rid = rid or new_id()
    managed_team(rtype, rid)
    if if_none_exist:
        found = claim_criteria(planner, rtype, if_none_exist, what, rid)
        if found is not None:
            return _existing(planner, rtype, found)
    planner.checks.append(lambda: check_references(planner, resource))
    w = planner.add(
        make_write(rtype, rid, resource, version=1, expected=None, method="POST", tz=planner.ctx.tz,
                   protection=planner.repo.protection,
                   claims=_claims(planner, rtype, resource))
    )
    w.org = _writer_org(planner, None)
    w.by = _author(planner, None)
    return Result(201, w.stored(), location=_location(rtype, rid, 1))


def _existing(planner: Planner, rtype: str, rid: str) -> Result:
    """A conditional create's one match, returned as it is (200, nothing written)."""
    existing = planner.current(rtype, rid)
    planner.ctx.touch(existing.resource if existing else None)  # returned: audited
    return Result(200, existing, location=_location(rtype, rid, existing.version) if existing else None)


def _put(planner: Planner, rtype: str, rid: str, resource: dict[str, Any], current: Stored | None,
         method: str = "PUT", server: bool = False) -> Result:
    old = current.resource if current is not None and not current.deleted else None
    if not server:
        if old is not None and not planner.ctx.visible(current):  # type: ignore[arg-type]
            raise errors.NotFound(f"Resource {rtype}/{rid} is not known")
        planner.ctx.check_write(rtype, "update" if old is not None else "create", old, resource)
    resource = _identity(planner, rtype, old, resource, server)  # type: ignore[assignment]
    planner.checks.append(lambda: check_references(planner, resource))
    if current is not None and not current.deleted \
            and current.content_hash == blinded_hash(planner.repo.protection, resource):
        # Same content: no new version, as HAPI does; keeps re-imports idempotent.
        return Result(200, current, location=_location(rtype, rid, current.version))
    version = (current.version + 1) if current else 1
    w = planner.add(
        make_write(
            rtype, rid, resource, version=version,
            expected=current.version if current else None, method=method, tz=planner.ctx.tz,
            protection=planner.repo.protection,
            claims=_claims(planner, rtype, resource),
            previous_claims=_claims(planner, rtype, current.resource if current else None),
        )
    )
    w.org = _writer_org(planner, current)
    w.by = _author(planner, current)
    status = 200 if current is not None and not current.deleted else 201
    return Result(status, w.stored(), location=_location(rtype, rid, version))


def update(
    planner: Planner, rtype: str, rid: str, body: Any, *, if_match: str | None = None,
    server: bool = False, unmasked: bool = False,
) -> Result:
    """PUT Type/id (http.html#update); update-as-create for a client-chosen id.

    Update-as-create (http.html#upsert) is offered to callers who reach every record
    only: for anyone else an id that is free and an id that holds a record hidden
    from them must answer alike (404), or a PUT would tell which ids exist.
    ``server`` marks the server's own changes (a card number; the records a merge
    re-points), made whatever the caller may see or write: the operation that asks
    for them has checked its own rights. ``unmasked``: ``body`` is a conditional
    update's, its masks already put back.
    """
    def seen() -> Stored | None:
        if not is_valid_id(rid):
            return None
        stored = planner.current(rtype, rid)
        return stored if server else _seen(planner, stored, rtype, rid)

    resource = _validated(planner, rtype, body, seen, rid, guesses=not (server or unmasked))
    body_id = resource.get("id")
    if body_id is None:
        raise errors.Invalid("The resource must carry an id equal to the URL's", expression=f"{rtype}.id")
    if body_id != rid:
        raise errors.Invalid(
            f"The resource id '{body_id}' does not match the URL id '{rid}'", expression=f"{rtype}.id"
        )
    if not is_valid_id(rid):
        raise errors.Invalid(f"'{rid}' is not a valid FHIR id", expression=f"{rtype}.id")
    stored = planner.current(rtype, rid)
    current = stored if server else _seen(planner, stored, rtype, rid)
    if current is None and not server and (stored is not None or not planner.ctx.reaches_all):
        raise errors.NotFound(f"Resource {rtype}/{rid} is not known (a client-chosen id is "
                              "available only to callers who reach every record: create with POST)")
    check_if_match(if_match, current, f"{rtype}/{rid}")
    return _put(planner, rtype, rid, resource, current, server=server)


def conditional_update(
    planner: Planner, rtype: str, query: str, body: Any, *, if_match: str | None = None,
    rid: str | None = None,
) -> Result:
    """PUT Type?criteria (http.html#cond-update): 0 matches create, 1 updates, many 412.

    With no match the criteria are claimed as for a conditional create: of several
    concurrent updates one creates and the others update what it created. ``rid``
    is the id a create gets (a transaction chose it for the entry's fullUrl).
    """
    what = "Conditional update"

    found = single_match(planner.ctx, rtype, query, what)
    resource = _validated(planner, rtype, body,
                          lambda: planner.current(rtype, found) if found is not None else None,
                          found)
    body_id = resource.get("id")
    if found is None:
        rid = body_id if isinstance(body_id, str) else rid or new_id()
        found = claim_criteria(planner, rtype, query, what, rid)
        if found is None:
            if body_id is not None:
                return update(planner, rtype, body_id, resource, if_match=if_match,
                              unmasked=True)
            return create(planner, rtype, resource, rid=rid)
    if body_id is not None and body_id != found:
        raise errors.Invalid(
            f"The resource id '{body_id}' differs from the matching resource {rtype}/{found}",
            expression=f"{rtype}.id",
        )
    return update(planner, rtype, found, {**resource, "id": found}, if_match=if_match,
                  unmasked=True)


def patch(
    planner: Planner, rtype: str, rid: str, operations: Any, *, if_match: str | None = None
) -> Result:
    """PATCH Type/id with a JSON Patch document (http.html#patch, RFC 6902)."""
    current = _seen(planner, planner.current(rtype, rid), rtype, rid)
    if current is None:
        raise errors.NotFound(f"Resource {rtype}/{rid} is not known")
    if current.deleted:
        raise errors.Gone(f"Resource {rtype}/{rid} was deleted")
    check_if_match(if_match, current, f"{rtype}/{rid}")
    if not isinstance(operations, list):
        raise errors.Invalid("A JSON Patch document must be a JSON array of operations")
    # The patch applies to the resource as the caller reads it (identity numbers
    # masked where their access does not need them whole): a ``test`` op, a failed
    # test's message or a ``copy``/``move`` into another element would otherwise
    # hand them the whole number. The masks it leaves stand for the stored values.
    seen = disclosed(planner.ctx, current.resource)
    try:
        ops = jsonpatch.JsonPatch(operations)
        patched = ops.apply(copy.deepcopy(seen))
    except jsonpatch.JsonPatchTestFailed as exc:
        raise errors.Unprocessable(f"JSON Patch test failed: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise errors.Unprocessable(f"JSON Patch cannot be applied: {exc}") from exc
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise errors.Invalid(f"Malformed JSON Patch document: {exc}") from exc
    if not isinstance(patched, dict) or patched.get("resourceType") != rtype:
        raise errors.Unprocessable("A patch may not change the resource type", expression=f"{rtype}")
    if patched.get("id") != rid:
        raise errors.Unprocessable("A patch may not change the resource id", expression=f"{rtype}.id")
    resource = _validated(planner, rtype, patched, lambda: current, rid)
    return _put(planner, rtype, rid, resource, current, method="PATCH")


def delete(planner: Planner, rtype: str, rid: str, *, if_match: str | None = None) -> Result:
    """DELETE Type/id (http.html#delete): deleting what is missing or gone is not an error.

    Like HAPI, a resource that others still reference is not deleted (409), so that
    no stored reference dangles.
    """
    current = _seen(planner, planner.current(rtype, rid), rtype, rid)
    check_if_match(if_match, current, f"{rtype}/{rid}")
    planner.ctx.check_write(rtype, "delete", current.resource if current else None, None)
    if current is None or current.deleted:
        return Result(200, outcome=errors.information(f"{rtype}/{rid} does not exist or is already deleted: nothing to do"))
    planner.ctx.touch(current.resource)  # a deletion changes that patient's record
    if rtype == "Patient":
        _delete_team(planner, rid)
    w = planner.add(
        make_write(rtype, rid, None, version=current.version + 1, expected=current.version,
                   method="DELETE", tz=planner.ctx.tz, protection=planner.repo.protection,
                   previous_claims=_claims(planner, rtype, current.resource))
    )
    planner.checks.append(lambda: _check_not_referenced(planner, f"{rtype}/{rid}"))
    # ... and again once the delete is stored: a write referring to the record may
    # have been stored in between (interactions/integrity.py)
    planner.settles.append(lambda: _check_not_referenced(planner, f"{rtype}/{rid}",
                                                         stored=True))
    return Result(
        200,
        w.stored(),
        outcome=errors.information(f"Deleted {rtype}/{rid} (version {w.version})"),
    )


def _delete_team(planner: Planner, patient: str) -> None:
    """A deleted Patient's care team (model/care_teams.py) goes with them, in the same
    commit: it is the server's record of their team and refers to nothing else."""
    tid = team_id(patient)
    team = planner.current("CareTeam", tid)
    if team is not None and not team.deleted:
        planner.add(make_write("CareTeam", tid, None, version=team.version + 1,
                               expected=team.version, method="DELETE", tz=planner.ctx.tz,
                               protection=planner.repo.protection))


def conditional_delete(planner: Planner, rtype: str, query: str) -> Result:
    """DELETE Type?criteria (http.html#cdelete): 0 is fine, 1 is deleted, many 412."""
    found = single_match(planner.ctx, rtype, query, "Conditional delete")
    if found is None:
        return Result(200, outcome=errors.information("No resource matched: nothing deleted"))
    return delete(planner, rtype, found)


def _check_not_referenced(planner: Planner, target: str, stored: bool = False) -> None:
    """409 while other records refer to ``target``. A Group's membership is no such
    record: it lists patients, often another organisation's list, and must neither
    keep a patient's record from being deleted nor tell the deleter that a list
    names them (an export reports a deleted member as not known).

    Once the delete is ``stored``, the units running beside it are waited for first:
    one that took a reference away (deleted or re-pointed a record) may yet fail, and
    taking its writes back puts the reference back; and so is a writer quick enough
    to skip its own second look (interactions/integrity.py)."""
    if stored:
        integrity.before_second_look(planner, target)
    exempt = {GROUP} if target.startswith("Patient/") else set()
    planned: dict[str, set[str]] = {}
    for w in planner.writes:
        planned.setdefault(w.type, set()).add(w.id)
    referring = {
        f"{t}/{i}" for t, i in planner.repo.referrers(target, besides=planned, skip=exempt)
        if (p := planner.pending(t, i)) is None or (not p.deleted and target in p.refs)
    }
    # What the same transaction writes: the caller's own entries, named as such (a
    # record it creates is not stored yet, and may not be visible to it once it is).
    written = sorted({f"{planner.names.get(f'{w.type}/{w.id}', f'{w.type}/{w.id}')} "
                      "(written by this transaction)" for w in planner.writes
                      if not w.deleted and target in w.refs and w.type not in exempt})
    if referring or written:
        shown = sorted(r for r in referring
                       if (s := planner.repo.get(*r.split("/", 1))) is not None
                       and planner.ctx.visible(s))
        hidden = len(referring) > len(shown)
        # Hidden referrers are neither named nor counted.
        named = written + shown
        names = ", ".join(named[:5]) if named else "other resources"
        if named and (hidden or len(named) > 5):
            names += " and other resources"
        raise errors.Conflict(f"{target} cannot be deleted: it is referenced by {names}")
