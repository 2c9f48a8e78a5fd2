"""Turning an accepted resource into a write: server-managed meta and index values.

Pure: no database. The search values (``sp``) are extracted here, at write time, so
that search never reads the FHIR JSON itself (DESIGN.md section 4).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson

from ..model import json_text
from ..model.references import iter_references, parse_reference
from ..model.security_labels import is_sensitive
from ..search.buckets import BUCKET_FIELD, buckets_of
from ..search.extract import extract
from ..search.keys import KEY_FIELD, keys_of, stored_values
from ..search.shards import shard_fields
from ..search.sorting import sort_values
from .protection import DATA_KEYS_FIELD, Protection
from .records import Write
from .stored_form import resource_of

_COMPARTMENT_ELEMENT = {"Observation": "subject", "DiagnosticReport": "subject",
                       "CareTeam": "subject"}


def now() -> datetime:
    """The current instant at the millisecond precision MongoDB stores."""
    t = datetime.now(UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def instant(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def patient_of(resource: dict[str, Any]) -> str | None:
    """The compartment key: the Patient a record belongs to (R4 compartmentdefinition-patient)."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    element = _COMPARTMENT_ELEMENT.get(str(rtype))
    ref = resource.get(element) if element else None
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        local = parse_reference(ref["reference"])
        if local is not None and local.type == "Patient":
            return local.id
    return None


def local_references(resource: dict[str, Any]) -> list[str]:
    """Every "Type/id" this resource points to, for referential integrity and _revinclude."""
    out: set[str] = set()
    for _path, ref in iter_references(resource):
        local = parse_reference(ref)
        if local is not None:
            out.add(f"{local.type}/{local.id}")
    return sorted(out)


def content_hash(resource: dict[str, Any]) -> str:
    """Hash of the content without server-managed meta, to recognise no-op updates."""
    body = dict(resource)
    meta = dict(body.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    body.pop("id", None)
    if meta:
        body["meta"] = meta
    else:
        body.pop("meta", None)
    return hashlib.sha256(json_text.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def blinded_hash(protection: Protection, resource: dict[str, Any]) -> str:
    """The content hash stored for ``resource``: of its blinded form, so that it is no
    unkeyed hash of an identity number (the rest of the resource is in clear)."""
    return content_hash(protection.blinder.blinded(resource))


def with_meta(resource: dict[str, Any], rid: str, version: int, at: datetime) -> dict[str, Any]:
    """A copy of ``resource`` with the id and server-managed meta of a new version."""
    out = dict(resource)
    out["id"] = rid
    meta = dict(out.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(at)
    out["meta"] = meta
    return out


def make_write(
    rtype: str,
    rid: str,
    resource: dict[str, Any] | None,
    *,
    version: int,
    expected: int | None,
    method: str,
    tz: tzinfo,
    protection: Protection,
    at: datetime | None = None,
    claims: tuple[str, ...] = (),
    previous_claims: tuple[str, ...] = (),
) -> Write:
    """The write of a new version. Search values, the content hash and the unique
    identifier claims come from the blinded form, the stored form is encrypted
    (storage/protection.py): no identity number reaches the database in clear."""
    at = at or now()
    claims = tuple(protection.claim_key(k) for k in claims)
    previous_claims = tuple(protection.claim_key(k) for k in previous_claims)
    if resource is None:
        return Write(rtype, rid, version, expected, at, None, method,
                     previous_claims=previous_claims)
    stored = with_meta(resource, rid, version, at)
    blinded = protection.blinder.blinded(stored)
    sealed, keys = protection.cipher.seal(stored)
    return Write(
        rtype,
        rid,
        version,
        expected,
        at,
        stored,
        method,
        patient=patient_of(stored),
        search=extract(blinded, tz),
        content_hash=content_hash(blinded),
        refs=local_references(stored),
        claims=claims,
        previous_claims=previous_claims,
        sealed=sealed,
        data_keys=keys,
    )


def rebuild_current(rtype: str, history_doc: dict[str, Any], tz: tzinfo,
                    protection: Protection) -> dict[str, Any]:
    """The current-collection document for a version read back from history."""
    raw = history_doc.get("res")
    res = protection.opened(resource_of(raw), history_doc)
    blinded = protection.blinder.blinded(res) if res else None
    sp = extract(blinded, tz) if blinded else {}
    so = sort_values(rtype, sp)
    return {
        "_id": history_doc["rid"],
        "v": history_doc["v"],
        "lu": history_doc["lu"],
        "del": bool(history_doc.get("del")),
        "res": raw,
        "pat": history_doc.get("pat"),
        "sp": stored_values(rtype, sp),
        KEY_FIELD: keys_of(rtype, sp),
        "so": so,
        BUCKET_FIELD: buckets_of(rtype, so),
        "h": content_hash(blinded) if blinded else "",
        "refs": local_references(res) if res else [],
        "sens": is_sensitive(res),
        DATA_KEYS_FIELD: history_doc.get(DATA_KEYS_FIELD) or [],
        "org": history_doc.get("org"),
        "by": history_doc.get("by"),
        **shard_fields(history_doc["rid"]),
    }
