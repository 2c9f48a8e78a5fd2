"""Applying the access policy to one request: the caller's reachable patients, and
the checks and filters the interactions call (reads, searches, writes).

Care relationships live in ``_care_relationships``, one record per (clinician or
organisation, patient) keyed by both, with the time it lasts: a card scan gives one
for ``care_hours`` (default 24), break-the-glass for ``break_glass_minutes`` and
flags it as an emergency, care team membership lasts until it is ended; a
break-the-glass over a longer relationship is laid on top of it, with its own end.
Writing a record gives none: its author keeps reach to that record only
(``by``/``org``).

A patient reaches their own record and, read-only, those of the family members
who bound their cards to them with proof; a member's records with sensitive labels
stay hidden from adult family unless the member shares them, a guardian of a
child sees the child's whole record.

A read the caller may not make answers 404, as if the resource did not exist, after
the same database work as for an id that does not exist; a search silently leaves
out what the caller may not see, counts included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from pymongo.errors import DuplicateKeyError

from .. import errors
from ..model.groups import GROUP
from ..model.security_labels import is_sensitive
from . import consent, reach_cache
from .bindings import family_reach
from .policy import Caller, Decision, decide, may_write
from .reach import emergency_now, live_reach
from .reach_cache import CARE

LASTING = timedelta(days=365 * 100)


#: Per process, for FAMILY_TTL seconds: whom a patient caller's family binding reaches,
#: so most requests make no database round trip for it. A change made in this process
#: is seen at once; one made in another worker within the TTL is caught for
#: single-resource reads by a direct check before refusing. Care relationships are
#: kept by :mod:`.reach_cache` instead.
FAMILY_TTL = 2.0
_family_cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}


def _cache_key(db: Any, who: str) -> tuple[str, str]:
    return (f"{getattr(db.client, 'address', '')}/{db.name}", who)


def forget(db: Any, who: str) -> None:
    _family_cache.pop(_cache_key(db, who), None)


def _cached(db: Any, who: str, load: Any) -> dict[str, Any]:
    key = _cache_key(db, who)
    hit = _family_cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < FAMILY_TTL:
        return hit[1]
    value = load()
    if len(_family_cache) > 50_000:
        _family_cache.clear()
    _family_cache[key] = (time.monotonic(), value)
    return value


def record_care(db: Any, who: str, patient: str, until: datetime, reason: str,
                emergency: bool = False, now: datetime | None = None) -> None:
    """Open (or extend) a care relationship; never shortens a longer one.

    A place on the care team is kept under it, with its own end (``team_until``),
    and what the clinician opened themselves is remembered (``own_until``): the
    organisation that ends their place ends only that (:func:`set_team_member`).

    An emergency (break-the-glass) over a relationship that lasts longer is laid on
    top of it, with its own end (``emergency_until``): the clinician's access is
    flagged as emergency access until then, and the relationship under it (a card
    scan, a place on the care team) goes on after. A longer relationship opened
    during an emergency (a card scan) keeps the emergency on top, to its end."""
    key, tz = f"{who}|{patient}", until.tzinfo
    for _ in range(ATTEMPTS):
        current = db[CARE].find_one({"_id": key})
        longer = current is not None and current["until"].replace(tzinfo=tz) >= until
        if longer and not emergency:
            own = _own_end(current, tz)
            if current is None or not current.get("team") or (own is not None and own >= until):
                return
            # Within a place on the care team, which its organisation may end sooner.
            doc = {**current, "own_until": until}
        elif longer and current is not None:
            doc = {**current, "emergency": True, "emergency_until": until,
                   "emergency_at": now or until}
        else:
            doc = {"_id": key, "who": who, "patient": patient, "until": until,
                   "reason": reason, "emergency": emergency, "at": now or until}
            if current is not None and current.get("team"):
                doc.update(team=True, team_org=current.get("team_org"),
                           team_until=_team_end(current, tz), own_until=until)
            if not emergency and current is not None \
                    and emergency_now(current, now or datetime.now(UTC)):
                _keep_emergency(doc, current, tz)
        if _swap(db, current, doc):
            reach_cache.changed(db, [key])
            return
    raise errors.Conflict("The care relationship was changed by another request at the same "
                          "time; try again")


#: How many times a change of one care relationship is tried again when another
#: request changed it between reading and writing.
ATTEMPTS = 8

#: The fields a care relationship may lack (:func:`_swap`).
OPTIONAL = ("team", "team_org", "team_until", "own_until", "emergency_until", "emergency_at")


def _swap(db: Any, current: dict[str, Any] | None, doc: dict[str, Any]) -> bool:
    """Write ``doc`` in place of ``current`` (None: there was none), unless another
    request changed or removed it since it was read: two requests changing one care
    relationship at once (a break-the-glass and a team change, a card scan, a deleted
    Patient) must not write back what they read over what the other just wrote; the
    one that loses reads again."""
    if current is None:
        try:
            db[CARE].insert_one(doc)
        except DuplicateKeyError:
            return False
        return True
    # The fields ``current`` lacks must still be absent: a change that only adds one
    # (a card scan's ``own_until`` on a relationship written before it existed)
    # matches every field ``current`` has, and would be written over unseen.
    absent = {k: {"$exists": False} for k in OPTIONAL if k not in current}
    return bool(db[CARE].replace_one({**current, **absent}, doc).matched_count)


def _keep_emergency(doc: dict[str, Any], current: dict[str, Any], tz: Any) -> None:
    """Carry the emergency still running in ``current`` over to ``doc``, to its own end."""
    end = (current.get("emergency_until") or current["until"]).replace(tzinfo=tz)
    doc.update(emergency=True, emergency_until=end,
               until=max(doc["until"].replace(tzinfo=tz), end),
               emergency_at=current.get("emergency_at", current.get("at")))


def _team_end(doc: dict[str, Any], tz: Any) -> datetime:
    """When the place on the care team that ``doc`` holds ends."""
    end: datetime = doc.get("team_until") or doc["until"]
    return end.replace(tzinfo=tz)


def _own_end(doc: dict[str, Any] | None, tz: Any) -> datetime | None:
    """When the part of ``doc`` the clinician opened themselves (a card scan, a
    break-the-glass) ends: all of it unless it is a place on the team; None: none."""
    if doc is None:
        return None
    end = doc.get("own_until") if doc.get("team") else doc["until"]
    return end.replace(tzinfo=tz) if isinstance(end, datetime) else None


@dataclass
class Access:
    """One request's view: computed once, used by every check of the request."""

    caller: Caller | None  # None: a trusted internal caller (CLI import), sees all
    db: Any
    now: datetime
    _reach: frozenset[str] | None | bool = field(default=False)  # False: not computed
    _emergency: frozenset[str] = frozenset()
    #: the patients whose care relationship with the caller this request looked up
    #: without the cache (:meth:`_fresh_reach`), and whether it was an emergency one
    _fresh_emergency: dict[str, bool] = field(default_factory=dict)
    _choices: dict[str, Any] | None = None
    #: the patients whose data this request returned, counted or changed, in order:
    #: what the audit record names (a patient's own view of the log rests on it)
    touched: list[str] = field(default_factory=list)
    #: the server's zone: a granular scope's dates are read in it, as a search's are
    tz: tzinfo = UTC

    def touch(self, patient: str | None) -> None:
        if patient and patient not in self.touched:
            self.touched.append(patient)

    # -- who is in reach ------------------------------------------------------------------

    def reachable(self) -> frozenset[str] | None:
        if self._reach is False:
            self._reach = self._compute()
        return self._reach  # type: ignore[return-value]

    def _compute(self) -> frozenset[str] | None:
        caller = self.caller
        if caller is None or caller.kind == "operator":
            return None
        if caller.kind == "patient":
            own = caller.patient or ""
            return frozenset({own, *self._family()["m"]})
        # A clinician's own relationships; a backend client's organisation's. The sets
        # live_reach keeps are used as they are: an organisation's hold thousands.
        who = caller.practitioner if caller.kind == "user" else caller.organization
        if not who:
            return frozenset()
        live, emergency = live_reach(reach_cache.relationships(self.db, who), self.now)
        self._emergency = emergency
        return live

    def _family(self) -> dict[str, Any]:
        """A patient caller's bound family: members ``m`` and the children among them
        whose guardian the caller is ``g`` (with the day guardianship ends)."""
        own = self.caller.patient or "" if self.caller else ""
        return _cached(self.db, f"family|{own}", lambda: family_reach(self.db, own))

    def guarded(self) -> frozenset[str]:
        """The children a patient caller is guardian of, today."""
        if self.caller is None or self.caller.kind != "patient":
            return frozenset()
        return frozenset(m for m, until in self._family()["g"].items()
                         if until.replace(tzinfo=self.now.tzinfo) > self.now)

    def audit_reach(self) -> frozenset[str] | None:
        """Whose access log a caller reads: a patient their own and their guarded
        children's (an adult family member's log is theirs alone); an operator all."""
        if self.caller is None or self.caller.kind == "operator":
            return None
        if self.caller.kind != "patient" or not self.caller.patient:
            return frozenset()
        return frozenset({self.caller.patient, *self.guarded()})

    def acts_for(self, patient: str) -> bool:
        """Whom a patient caller acts for (their card, their sharing choices): themself,
        and a guardian their child; never an adult family member (a binding gives
        reading, not the card)."""
        caller = self.caller
        if caller is None or caller.kind == "operator":
            return True
        if caller.kind != "patient":
            return False
        return patient == caller.patient or patient in self.guarded()

    # -- the patients' sharing choices ----------------------------------------------------

    def _consent_applies(self) -> bool:
        return self.caller is not None and self.caller.kind in ("user", "system")

    def family_hidden(self) -> list[str]:
        """Adult family members (in a patient caller's reach) whose sensitive records
        the caller may not read: those who did not choose to share them."""
        caller = self.caller
        if caller is None or caller.kind != "patient":
            return []
        others = (self.reachable() or frozenset()) - {caller.patient or ""} - self.guarded()
        if not others:
            return []
        choices = consent.cached(self.db, others)
        return sorted(p for p in others
                      if not (choices.get(p) or consent.Choice()).share_with_family)

    def _choice_of(self, patient: str) -> Any:
        """The consent choice of one patient, as :meth:`choices` has it (None: none).

        A patient this request reached only through a relationship looked up without
        the cache (another worker's card scan, :meth:`_fresh_reach`) is in reach as
        well: their choice applies to the read as it will once the cache has it,
        unless that relationship is an emergency. A record read only as its author's
        is no reach of the patient, and none applies, as for searches."""
        reach = self.reachable()
        if not self._consent_applies() or reach is None:
            return None
        if patient in reach:
            if patient in self._emergency:
                return None
            if self._choices is not None:
                return self._choices.get(patient)
        elif self._fresh_emergency.get(patient, True):
            return None  # not reached, or reached by a fresh break-the-glass
        return consent.cached(self.db, [patient]).get(patient)

    def choices(self) -> dict[str, Any]:
        """Consent choices of the patients in reach, except those opened by
        break-the-glass (an emergency overrides them, and is recorded as such)."""
        if self._choices is None:
            reach = self.reachable()
            wanted = (reach or frozenset()) - self._emergency
            self._choices = consent.cached(self.db, wanted) if self._consent_applies() else {}
        return self._choices

    def consent_filter(self, rtype: str, pinned: str | None = None) -> dict[str, Any] | None:
        """The condition applying the sharing choices; ``pinned``: of that patient
        alone, whose compartment the search is limited to."""
        if rtype not in ("Observation", "DiagnosticReport"):
            return None
        if not self._consent_applies():
            hidden = self.family_hidden()
            return {"$or": [{"pat": {"$nin": hidden}}, {"sens": {"$ne": True}}]} if hidden else None
        org = self.caller.organization if self.caller else None
        if pinned is not None:
            choice = self._choice_of(pinned)
            return consent.condition({pinned: choice} if choice is not None else {}, org)
        return consent.condition(self.choices(), org)

    def consent_allows(self, rtype: str, patient: str | None, resource: dict[str, Any] | None,
                       writer_org: str | None) -> bool:
        if rtype not in ("Observation", "DiagnosticReport") or not patient:
            return True
        if not self._consent_applies():
            return patient not in self.family_hidden() or not is_sensitive(resource)
        choice = self._choice_of(patient)
        return consent.allowed(choice, is_sensitive(resource), writer_org,
                               self.caller.organization if self.caller else None)

    # -- decisions ------------------------------------------------------------------------

    def decision(self, rtype: str, interaction: str, *, identifier_lookup: bool = False) -> Decision:
        if self.caller is None:
            return Decision(True, None)
        d = decide(self.caller, rtype, interaction, self.reachable(),
                   identifier_lookup=identifier_lookup)
        if not d.allowed:
            raise errors.Forbidden(f"The access token's scopes do not allow {interaction} on "
                                   f"{rtype} ({d.reason})")
        return d

    def search_filter(self, rtype: str, identifier_lookup: bool = False,
                      pinned: str | None = None) -> dict[str, Any] | None:
        """The MongoDB condition limiting a search to what the caller may see, or None.

        ``pinned``: the one patient whose compartment the search is limited to. When the
        caller does not reach that patient, only what they wrote there is theirs to
        see, and the condition says so as an equality an index answers: the search
        then costs what a search of a patient who does not exist costs, whatever the
        size of the hidden record (no timing tells it apart). When the caller reaches
        them, the condition is that equality too, not the list of every patient the
        caller reaches: the database tests the condition on each record it reads, and
        an organisation's list holds thousands."""
        d = self.decision(rtype, "search", identifier_lookup=identifier_lookup)
        parts: list[dict[str, Any]] = []
        if d.patients is not None:
            field_ = "_id" if rtype == "Patient" else "pat"
            reach: dict[str, Any] = {field_: {"$in": sorted(d.patients)}}
            if pinned is not None and field_ == "pat" and pinned in d.patients:
                reach = {"pat": pinned}
            elif pinned is not None and field_ == "pat":
                reach = {d.authored[0]: d.authored[1]} if d.authored else {"by": NOBODY}
            elif d.authored:
                reach = {"$or": [reach, {d.authored[0]: d.authored[1]}]}
            parts.append(reach)
        if d.constraints:
            parts.append(self._constraints(rtype, d.constraints))
        chosen = self.consent_filter(rtype, pinned if rtype != "Patient" else None)
        if chosen:
            parts.append(chosen)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else {"$and": parts}

    def _constraints(self, rtype: str,
                     constraints: tuple[tuple[tuple[str, str], ...], ...]) -> dict[str, Any]:
        from ..search.compile import compile_filter
        from ..search.parse import parse_query

        ors = [compile_filter(parse_query(rtype, list(q), tz=self.tz, strict=True))
               for q in constraints]
        return ors[0] if len(ors) == 1 else {"$or": ors}

    def require(self, interaction: str, kinds: tuple[str, ...], patient: str | None = None) -> None:
        """For operations on Patient: the caller must be of one of ``kinds`` (operators
        always are), hold a scope for ``interaction`` on Patient, and reach
        ``patient`` when one is named (404 otherwise, as for a read)."""
        caller = self.caller
        if caller is None:
            return
        if caller.kind != "operator" and caller.kind not in kinds:
            raise errors.Forbidden(f"This operation is not available to {caller.kind} tokens")
        d = self.decision("Patient", interaction)
        if patient is not None and d.patients is not None and patient not in d.patients:
            raise errors.NotFound(f"Resource Patient/{patient} is not known")

    def can_see(self, rtype: str, resource_patient: str | None, interaction: str = "read",
                authorship: dict[str, str | None] | None = None) -> bool:
        """For one stored resource (``authorship``: its ``by`` and ``org``): False
        means answer as if it did not exist."""
        d = self.decision(rtype, interaction)
        if d.patients is None or (resource_patient is not None and resource_patient in d.patients):
            return True
        if d.authored and (authorship or {}).get(d.authored[0]) == d.authored[1]:
            return True
        return resource_patient is not None and self._fresh_reach(resource_patient, d)

    def probe_absent(self, rtype: str, rid: str) -> None:
        """The database work a refused read does, for an id that does not exist, so
        that "hidden" and "never existed" take the same time (no timing oracle). A
        token with no scope to read ``rtype`` is refused (403) here as it is for an
        id that exists (:meth:`can_see`): the refusal does not tell which ids exist."""
        if self.caller is None or self.caller.kind == "operator":
            return
        d = self.decision(rtype, "read")
        if d.patients is not None:
            self._fresh_reach(rid if rtype == "Patient" else f"absent-{rid}", d)

    def _fresh_reach(self, patient: str, d: Decision) -> bool:
        """Before refusing, look again without the cache: another worker may have just
        opened the relationship (a card scan) or bound the family member."""
        caller = self.caller
        if caller is None or d.patients is None:
            return True
        if d.launch_only:
            # Only patient/ scopes cover this type: the launch patient alone, whatever
            # user/ scopes the token holds for other types.
            return False
        if caller.kind == "patient":
            return patient in family_reach(self.db, caller.patient or "")["m"]
        who = caller.practitioner if caller.kind == "user" else caller.organization
        doc = self.db[CARE].find_one({"_id": f"{who}|{patient}"}) if who else None
        live = doc is not None and doc["until"].replace(tzinfo=self.now.tzinfo) > self.now
        if live:
            # Break-the-glass is a clinician's: an organisation's relationship is none.
            self._fresh_emergency[patient] = caller.kind == "user" \
                and emergency_now(doc, self.now)  # type: ignore[arg-type]
        return live

    def opened_emergency(self, patient: str) -> None:
        """This request broke the glass for ``patient``: its reach is emergency."""
        self._fresh_emergency[patient] = True

    def emergency(self, patient: str) -> bool | None:
        """Whether the clinician's access to ``patient`` rests on break-the-glass, as
        this request's own authorization saw the relationship; None when it did not
        look at one (the audit record then asks the database)."""
        caller = self.caller
        if caller is None or caller.kind != "user" or not caller.practitioner:
            return None
        if patient in self._fresh_emergency:
            return self._fresh_emergency[patient]
        if self._reach is False or not isinstance(self._reach, frozenset) \
                or patient not in self._reach:
            return None
        return patient in self._emergency

    def check_write(self, rtype: str, interaction: str, patients: set[str | None],
                    creating: bool) -> None:
        """Writing into a patient's record needs a care relationship with them (a
        backend client: its organisation's), exactly as reading does; registering a
        new Patient is open to clinicians and clinic systems."""
        d = self.decision(rtype, interaction)
        caller = self.caller
        if caller is not None and creating and rtype == "Patient" and caller.kind in ("system", "user"):
            return  # registering a new patient
        if rtype == GROUP:
            # A Group is in no compartment: the decision settled who may write one at
            # all, and an existing Group is changed only after it was found visible
            # (its organisation's, see policy._group); another's answers 404 first.
            return
        if not may_write(d, patients):
            raise errors.Forbidden(
                f"You may not write {rtype} into the record of a patient you are not treating")


#: An author no record has: the reach of a caller who reaches nothing in a compartment.
NOBODY = "urn:fhirserver:nobody"


def drop_authorship_relationships(db: Any) -> None:
    """Earlier versions opened a patient's whole record for a century to whoever wrote
    or performed one of its results; authorship now reaches that record only, so
    those relationships are removed at start."""
    if db[CARE].delete_many({"reason": "author"}).deleted_count:
        reach_cache.changed(db, None)


def set_team_member(db: Any, patient: str, practitioner: str, now: datetime,
                    remove: bool = False, organization: str | None = None) -> None:
    """Care team membership, added by an organisation's clinic system: it lasts as
    long as that organisation's own care relationship with the patient (a team
    cannot outlive the treatment it belongs to), and only that organisation takes
    a member off again. ``organization`` None: an operator, whose teams last until
    ended. Raises Forbidden for another organisation's member."""
    key = f"{practitioner}|{patient}"
    for _ in range(ATTEMPTS):
        current = db[CARE].find_one({"_id": key})
        doc = _membership(db, current, key, patient, practitioner, now, remove, organization)
        if doc is None:
            return
        if _swap(db, current, doc):
            reach_cache.changed(db, [key])
            return
    raise errors.Conflict("The care relationship was changed by another request at the same "
                          "time; try again")


def _membership(db: Any, current: dict[str, Any] | None, key: str, patient: str,
                practitioner: str, now: datetime, remove: bool,
                organization: str | None) -> dict[str, Any] | None:
    """The relationship :func:`set_team_member` writes over ``current``; None: none."""
    # A place that has ended (with its organisation's care) is no place: it neither
    # keeps another organisation from putting the clinician on its team, nor is
    # there anything left of it to end.
    placed = current is not None and bool(current.get("team")) \
        and _team_end(current, now.tzinfo) > now
    if placed and current is not None and organization is not None \
            and current.get("team_org") not in (None, organization):
        raise errors.Forbidden("That member was put on the team by another organisation")
    if remove and not placed:
        return None  # not on the team: nothing to end (a card scan of theirs stays)
    # A card scan or break-the-glass of the member's own outlasts their place.
    own = _own_end(current, now.tzinfo)
    own = own if own is not None and own > now else None
    if remove:
        until = team_until = now
    elif organization is None:
        until = team_until = now + LASTING
    else:
        org = db[CARE].find_one({"_id": f"{organization}|{patient}"})
        until = team_until = org["until"].replace(tzinfo=now.tzinfo) if org is not None else now
        if until <= now:
            raise errors.NotFound(f"Resource Patient/{patient} is not known")
    doc = {"_id": key, "who": practitioner, "patient": patient, "until": max(until, own or until),
           "reason": "care-team", "emergency": False, "at": now,
           "team": not remove, "team_org": organization, "own_until": own}
    if not remove:
        doc["team_until"] = team_until
    if current is not None and emergency_now(current, now):
        # A break-the-glass still running goes on to its own end, joining or leaving
        # the team alike: it was opened for a reason of its own.
        _keep_emergency(doc, current, now.tzinfo)
    return doc


def end_patient(db: Any, patient: str) -> None:
    """Remove every care relationship with ``patient`` (team, card scans, emergency
    access): called when the Patient is deleted and when a Patient is written again
    at a deleted one's id. A record registered at a reused id is a new person's;
    those who treated the deleted one have no care of them."""
    found = list(db[CARE].find({"patient": patient}, {"who": 1}))
    if not found:
        return
    keys = [d["_id"] for d in found]
    try:
        db[CARE].delete_many({"_id": {"$in": keys}})
    finally:  # some may be deleted even when the call fails
        reach_cache.changed(db, keys)


def end_relationship(db: Any, who: str, patient: str, at: datetime, reason: str) -> None:
    """Remove ``who``'s relationship with ``patient`` if it is still the one opened
    at ``at`` for ``reason`` (a request's own, which must not stand: Context.open_care)."""
    key = f"{who}|{patient}"
    if db[CARE].delete_one({"_id": key, "at": at, "reason": reason}).deleted_count:
        reach_cache.changed(db, [key])


def team(db: Any, patient: str, now: datetime) -> list[tuple[str, datetime]]:
    """The patient's active team members and when each membership ends."""
    return sorted((d["who"], _team_end(d, now.tzinfo))
                  for d in db[CARE].find({"patient": patient, "team": True})
                  if _team_end(d, now.tzinfo) > now)
