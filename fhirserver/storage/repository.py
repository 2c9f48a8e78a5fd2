"""Reading and writing versioned resources in one MongoDB database."""

from __future__ import annotations

import contextlib
import heapq
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, tzinfo
from functools import cmp_to_key, partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mongoengine import connect, disconnect
from mongoengine.connection import get_connection, get_db
from pymongo import DESCENDING, IndexModel
from pymongo.errors import BulkWriteError, CollectionInvalid, DuplicateKeyError, OperationFailure

from ..config import Settings
from ..crypto.binding import bind
from ..crypto.master import MasterKey
from ..crypto.master import load as load_master_key
from ..errors import ServerError
from ..model.identifier_systems import Registry, load_registry
from ..model.types import SUPPORTED_TYPES
from ..search.buckets import (
    BUCKET_FIELD,
    BUCKETED,
    COUNT_STEP,
    DAYS,
    DENSE,
    REGISTRY,
    REGISTRY_BATCH,
    buckets_of,
    by_day,
    group,
    is_month,
    month_order,
    registry_docs,
    walk_plan,
)
from ..search.catalog import parameters_for
from ..search.keys import EXACT_TYPES, KEY_FIELD, indexed_branches, key_values, keys_of, lifted
from ..search.latest import GROUPED, MARKER, group_doc, group_of
from ..search.shards import ORDER_FIELD, resume_position, walked
from ..search.shards import plan as shard_plan
from ..search.sorting import compare_rows, row_key, sort_values
from . import changes
from .day_buckets import add_day_buckets
from .documents import SEARCH_CLAIMS_COLLECTION, build_collections
from .indexing import rebuild_current
from .postgres_indexes import ensure_gin_indexes
from .protection import CARDS, Protection
from .record_passes import (
    add_date_keys,
    add_population_shards,
    drop_union_values,
    store_as_text,
)
from .records import Stored, Write
from .reencryption import Progress, Reencryption
from .search_claims import SearchClaims
from .stored_form import resource_of
from .table_estimates import TableEstimates
from .unit_of_work import UnitOfWork, Verify

#: Indexes of the collections beside the resources: care relationships by who holds
#: them (the access policy's one query per caller), audit records by patient (a
#: patient's own log), card scans by patient, accounts by whom they sign in as (a
#: deleted Patient's are disabled).
OPERATIONAL_INDEXES: tuple[tuple[str, list[tuple[str, int]]], ...] = (
    ("_care_relationships", [("who", 1)]),
    ("_care_relationships", [("patient", 1), ("team", 1)]),
    ("_audit", [("patients", 1), ("_id", -1)]),
    ("_card_scans", [("patient", 1), ("at", -1)]),
    ("_card_bindings", [("member", 1), ("kind", 1)]),
    ("_card_bindings", [("card", 1), ("kind", 1)]),
    ("_card_bindings", [("holder", 1), ("kind", 1)]),
    ("_oauth_token_families", [("family", 1)]),
    ("_users", [("fhirUser", 1)]),
    (REGISTRY, [("g", 1)]),
)
log = logging.getLogger(__name__)
#: What reads leave out: the search and sort values and references are for the database.
_LEAN = {"sp": 0, "so": 0, "refs": 0, "k": 0, "b": 0, "ps": 0, "sh": 0}
_KEYED = {"sp": 0, "refs": 0, "h": 0, "k": 0, "b": 0, "ps": 0}
NAMESPACE_EXISTS = 48
#: Which one-time migrations of the stored documents have run.
SCHEMA = "_schema"
#: The one-time passes that reshape records (``_once``), which a new database needs not run.
_RESHAPING = ("day-buckets", "resource-text", "date-keys", "union-values", "population-shards")
#: Bucket queries one page may make before it reads the compartment in one query.
BUCKETS_PER_PAGE = 12
HistoryKey = tuple[datetime, str]  # (lastUpdated, history _id): the keyset cursor order


def _live(rtype: str, query: dict[str, Any]) -> dict[str, Any]:
    """The current, not deleted resources matching ``query``, with the equalities it
    implies at the top level, where an index (or FerretDB's pushdown) can use them."""
    return lifted(rtype, query, {"del": False})


def _stored(protection: Protection, rtype: str, doc: dict[str, Any],
            rid: str | None = None) -> Stored:
    return Stored(
        type=rtype,
        id=rid or doc["_id"],
        version=doc["v"],
        last_updated=doc["lu"],
        deleted=bool(doc.get("del")),
        resource=protection.opened(resource_of(doc.get("res")), doc),
        method=doc.get("method", ""),
        content_hash=doc.get("h", ""),
        org=doc.get("org"),
        by=doc.get("by"),
        tx=doc.get("tx"),
    )


class Repository:
    """Versioned resources of the supported types in one database."""

    def __init__(
        self, uri: str, db_name: str, tz: tzinfo, *, master: MasterKey, registry: Registry,
        transactions: str = "auto", postgresql_url: str = "",
    ) -> None:
        self.db_name = db_name
        self.postgresql_url = postgresql_url
        self.table_estimates = TableEstimates(postgresql_url, db_name) if postgresql_url else None
        self.alias = f"fhir-{uuid.uuid4().hex[:12]}"
        connect(db=db_name, host=uri, alias=self.alias, tz_aware=True, uuidRepresentation="standard")
        self.client = get_connection(self.alias)
        self.db = get_db(self.alias)
        self.cols = build_collections(self.alias)
        self.tz = tz
        #: every record has its population shards (seen once, it stays so)
        self._shards_ready = False
        #: identity numbers and telecom values: encrypted at rest, blinded for search
        self.protection = Protection.open(self.db, master, registry)
        self._stored = partial(_stored, self.protection)
        #: per type, an id that was found lately: a read of it costs what reading any
        #: stored resource costs (see :meth:`read_alike`)
        self._found: dict[str, str] = {}
        #: month and day buckets known to be in the registry (search/buckets.py), and
        #: the records this process has counted into each month
        self._registered: set[str] = set()
        self._markers: set[str] = set()
        self._counted: Counter[str] = Counter()
        #: of those, the creates not yet added to the month's count in the registry
        self._uncounted: Counter[str] = Counter()
        self._counting = threading.Lock()
        # FerretDB 1.x answers ``_id: {$in: [...]}`` by scanning the collection, and
        # one indexed lookup per id by a few milliseconds each; MongoDB wants $in.
        self.lookup_ids_one_by_one = "ferretdbVersion" in self.db.command("buildInfo")
        #: locks on conditional criteria while a conditional create writes
        self.search_claims = SearchClaims(self.db[SEARCH_CLAIMS_COLLECTION])
        self.uow = UnitOfWork(
            self.cols,
            self.client,  # type: ignore[arg-type]
            partial(rebuild_current, tz=tz, protection=self.protection),
            use_transactions=self._supports_transactions(transactions),
            pk_only=self.lookup_ids_one_by_one,
        )

    @classmethod
    def from_settings(cls, settings: Settings, initialise: bool = True,
                      encrypt: bool = True) -> Repository:
        """The repository the settings name, indexes created and recovery done
        (unless not ``initialise``), and values an older version stored in clear
        encrypted (unless not ``encrypt``: the operator commands leave that long pass
        to ``serve``, which shows its progress, or to ``keys reencrypt``)."""
        if not settings.mongodb_uri:
            raise ServerError(
                "MONGODB_URI is not set; run `fhirserver serve` for the embedded database"
            )
        master = load_master_key(settings)
        repo = cls(
            settings.mongodb_uri, settings.mongodb_db, ZoneInfo(settings.timezone),
            master=master, registry=load_registry(settings.identifier_systems),
            transactions=settings.mongodb_transactions,
            postgresql_url=settings.ferretdb_postgresql_url,
        )
        if settings.embedded:
            # only the processes of this data directory write it: they signal their
            # notes of changes to each other (storage/changes.py)
            changes.signal_in(repo.db, Path(settings.data_dir))
        try:
            # Another key could open no data key: stop here, with both key ids named.
            bind(repo.db, master)
        except BaseException:
            repo.close()
            raise
        if initialise:
            repo.initialise(encrypt=encrypt)
        return repo

    def _supports_transactions(self, mode: str) -> bool:
        if mode in ("on", "off"):
            return mode == "on"
        try:
            hello = self.db.command("hello")
        except OperationFailure:
            return False
        return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"

    def initialise(self, encrypt: bool = True) -> None:
        """Create indexes and roll back transactions a dead process left half done,
        before this process answers anything (storage/recovery.py)."""
        self.mark_new_database()
        declared = [*self.cols.declared_indexes(), *OPERATIONAL_INDEXES]
        if self.lookup_ids_one_by_one:
            # FerretDB's own (B-tree) indexes serve none of its queries and slow every
            # write: on PostgreSQL the tables get GIN indexes on the same leading
            # fields instead (storage/postgres_indexes.py).
            present = set(self.db.list_collection_names())
            for name in dict.fromkeys([*(c for c, _ in declared), SEARCH_CLAIMS_COLLECTION]):
                if name not in present:
                    try:
                        self.db.create_collection(name)
                    except CollectionInvalid:
                        pass
                    except OperationFailure as exc:
                        if exc.code != NAMESPACE_EXISTS:  # another worker created it first
                            raise
            if self.postgresql_url:
                ensure_gin_indexes(self.postgresql_url, self.db_name, declared)
        else:
            by_collection: dict[str, list[IndexModel]] = {}
            for name, keys in declared:
                by_collection.setdefault(name, []).append(IndexModel(keys))
            for name, models in by_collection.items():
                self.db[name].create_indexes(models)
        self.uow.recover()
        self._add_search_keys()
        # Unlike the other one-time passes, a search depends on this one (a birth-date
        # search tests the day's key): a worker started without ``serve`` (``gunicorn
        # wsgi:app``) must not answer before the Patients an older version stored
        # have their keys. After ``serve`` it finds the pass marked done.
        self.add_date_keys()
        if encrypt:
            self.encrypt_clear_values()

    def recover(self) -> int:
        """Roll back the transactions nobody will finish (storage/recovery.py)."""
        return self.uow.recover()

    def _add_search_keys(self) -> None:
        """Records written before index keys and month buckets existed get them (and
        their months in the registry) once; until then no search would find them."""
        if self.db[SCHEMA].find_one({"_id": "search-keys"}) is not None:
            return
        for rtype, collection in self.cols.current.items():
            for doc in collection.find({KEY_FIELD: {"$exists": False}},
                                       {"sp": 1, "so": 1, "pat": 1}):
                sp, so = doc.get("sp") or {}, doc.get("so") or {}
                buckets = buckets_of(rtype, so)
                collection.update_one({"_id": doc["_id"]}, {"$set": {
                    KEY_FIELD: keys_of(rtype, sp), BUCKET_FIELD: buckets}})
                for entry in registry_docs(rtype, doc.get("pat"), buckets):
                    self.db[REGISTRY].update_one({"_id": entry["_id"]}, {"$set": entry},
                                                 upsert=True)
        with contextlib.suppress(DuplicateKeyError):
            self.db[SCHEMA].insert_one({"_id": "search-keys", "v": 1})

    def key_copies_pending(self) -> bool:
        """Has the one-time removal of search values stored twice not run yet?"""
        return self.db[SCHEMA].find_one({"_id": "search-values"}) is None

    def drop_key_copies(self, progress: Progress | None = None) -> int:
        """Records written while ``sp`` still copied the values of exact-match
        parameters (their keys ``k`` hold them all, search/keys.py) drop the copies,
        once; returns the records changed. Searches find them either way, so this
        only makes them cheaper to read. ``serve`` runs it before its workers start:
        FerretDB reads and then writes a document, so it must not race a request."""
        if not self.key_copies_pending():
            return 0
        # Records from before ``k`` existed get their keys from these copies: a worker
        # would add them only after this pass, from an ``sp`` that no longer has them.
        self._add_search_keys()
        changed = 0
        for rtype, collection in self.cols.current.items():
            fields = [f"sp.{name}" for name, param in parameters_for(rtype).items()
                      if param.type in EXACT_TYPES and param.field != "_id"]
            total, seen = collection.estimated_document_count(), 0
            for doc in collection.find({"$or": [{f: {"$exists": True}} for f in fields]},
                                       {"_id": 1}):
                collection.update_one({"_id": doc["_id"]}, {"$unset": dict.fromkeys(fields, "")})
                changed, seen = changed + 1, seen + 1
                if progress and seen % 200 == 0:
                    progress(collection.name, seen, max(total, seen))
            if progress:
                progress(collection.name, seen, max(total, seen))
        with contextlib.suppress(DuplicateKeyError):
            self.db[SCHEMA].insert_one({"_id": "search-values", "v": 2})
        return changed

    def _pending(self, marker: str) -> bool:
        return self.db[SCHEMA].find_one({"_id": marker}) is None

    def _once(self, marker: str, run: Callable[[], int]) -> int:
        """``run()`` unless the one-time pass ``marker`` has run; then mark it."""
        if not self._pending(marker):
            return 0
        changed = run()
        with contextlib.suppress(DuplicateKeyError):
            self.db[SCHEMA].insert_one({"_id": marker, "v": 1})
        return changed

    def day_buckets_pending(self) -> bool:
        """Has the one-time pass that gives crowded months their days not run yet?"""
        return self._pending("day-buckets")

    def add_day_buckets(self, progress: Progress | None = None) -> int:
        """Months crowded before day buckets existed get them, once (day_buckets.py);
        returns the records changed. ``serve`` runs it before its workers start."""
        return self._once("day-buckets", lambda: add_day_buckets(self.db, self.cols, progress))

    def resource_text_pending(self) -> bool:
        """Has the one-time pass that stores resources as JSON text not run yet?"""
        return self._pending("resource-text")

    def store_resources_as_text(self, progress: Progress | None = None) -> int:
        """Current resources an earlier version stored as BSON documents become JSON
        text, once (record_passes.py); returns how many changed."""
        return self._once("resource-text", lambda: store_as_text(self.cols, progress))

    def date_keys_pending(self) -> bool:
        """Has the one-time pass that gives birth dates their day keys not run yet?"""
        return self._pending("date-keys")

    def add_date_keys(self, progress: Progress | None = None) -> int:
        """Records stored before day keys existed get them, once (record_passes.py);
        returns the records changed. ``serve`` runs it before its workers start, and
        :meth:`initialise` wherever ``serve`` did not."""
        return self._once("date-keys", lambda: add_date_keys(self.cols, progress))

    def union_values_pending(self) -> bool:
        """Has the one-time pass that drops the stored values of union parameters not run?"""
        return self._pending("union-values")

    def drop_union_values(self, progress: Progress | None = None) -> int:
        """Records stored with the values of union parameters in ``sp`` drop them,
        once (record_passes.py); returns the records changed. ``serve`` runs it
        before its workers start; until then they are only larger, never wrong."""
        return self._once("union-values", lambda: drop_union_values(self.cols, progress))

    def population_shards_pending(self) -> bool:
        """Has the one-time pass that gives records their population shards not run?"""
        return self._pending("population-shards")

    def add_population_shards(self, progress: Progress | None = None) -> int:
        """Records stored before population shards existed get them, once
        (record_passes.py); returns the records changed. ``serve`` runs it before
        its workers start. Until it has run, population pages are read whole."""
        changed = self._once("population-shards",
                             lambda: add_population_shards(self.cols, progress))
        self._shards_ready = True
        return changed

    def population_walk(self, rtype: str, query: dict[str, Any]) -> bool:
        """Is an unsorted page of ``query`` a population page read shard by shard
        (search/shards.py)? Only once every record has its shards, and only for a
        key that selects a large share of the type, with no patient pinned, or for
        no condition at all (``GET Patient``: every record matches, so each shard
        read fills the page with what it holds)."""
        flt = lifted(rtype, query)
        if query and ("pat" in flt or "_id" in flt or not walked(flt.get(KEY_FIELD))):
            return False
        if not self._shards_ready:
            self._shards_ready = not self.population_shards_pending()
        return self._shards_ready

    def patient_walk(self, rtype: str, query: dict[str, Any]) -> bool:
        """Can a page of ``query`` sorted by date be read month by month
        (search/buckets.py)? When it is pinned to one patient, and not to records
        chosen some other way (``_id``, or a writer's own ``by``/``org`` limit)."""
        flt = lifted(rtype, query)
        return rtype in BUCKETED and isinstance(flt.get("pat"), str) \
            and not {"by", "org", "_id"} & flt.keys()

    def encryption_pending(self) -> bool:
        """Has the one-time encryption of values stored in clear not run yet?"""
        return self.db[SCHEMA].find_one({"_id": "field-encryption"}) is None

    def mark_new_database(self) -> None:
        """A database that holds no resource, claim or card yet is only ever written by
        this version, which encrypts on the way in, stores each search value once and
        gives every record its day buckets, its day keys, its population shards and its
        resource as text, and no values of union parameters, and registers every
        record's $lastn group (search/latest.py): it is marked so at once,
        so that the first ``serve`` after a large ``fhirserver import`` does not scan
        every document for values stored in clear or twice (there are none to find)."""
        if not (self.encryption_pending() or self.key_copies_pending()
                or any(self._pending(marker) for marker in _RESHAPING)):
            return
        # Every collection the one-time pass encrypts (reencryption.py): a claim keeps
        # an identity number in clear even where the resource that held it is gone.
        collections = [*self.cols.current.values(), *self.cols.history.values(),
                       self.cols.claims, self.db[CARDS]]
        if any(c.find_one({}, {"_id": 1}) is not None for c in collections):
            return
        for marker in ({"_id": "field-encryption", "v": 1}, {"_id": "search-values", "v": 2},
                       {"_id": MARKER, "v": 1},
                       *({"_id": name, "v": 1} for name in _RESHAPING)):
            with contextlib.suppress(DuplicateKeyError):
                self.db[SCHEMA].insert_one(marker)

    def encrypt_clear_values(self, progress: Progress | None = None) -> int:
        """Identity numbers and telecom values an older version stored in clear are
        encrypted, and blinded in search values and claims, once (reencryption.py).
        ``serve`` runs it before its workers start; returns the documents changed."""
        if not self.encryption_pending():
            return 0
        changed = self.reencryption().run(progress).total
        with contextlib.suppress(DuplicateKeyError):
            self.db[SCHEMA].insert_one({"_id": "field-encryption", "v": 1})
        return changed

    def reencryption(self) -> Reencryption:
        """The pass that brings every stored value under the active data key."""
        return Reencryption(self.db, self.cols, self.protection, self.tz)

    def close(self) -> None:
        self.flush_counts()
        self.uow.close()
        disconnect(self.alias)

    def flush_counts(self) -> None:
        """Add to the registry the creates counted into months and not yet written
        there (:meth:`_register`); a failure only leaves the hint lower."""
        with self._counting:
            due, self._uncounted = self._uncounted, Counter()
        try:
            for key, n in due.items():
                self.db[REGISTRY].update_one({"_id": key}, {"$inc": {"n": n}})
        except Exception:  # noqa: BLE001 - the database is gone: do not wait on each
            log.warning("month counts not written: %d month(s) keep a lower count", len(due))

    # -- reads -----------------------------------------------------------------------

    def get(self, rtype: str, rid: str) -> Stored | None:
        doc = self.cols.current[rtype].find_one({"_id": rid}, _LEAN)
        if doc is None:
            return None
        self._found[rtype] = rid
        return self._stored(rtype, doc)

    def read_alike(self, rtype: str, found: bool) -> None:
        """One more read by id, of a resource that exists (``found``) or of one that
        does not: the access layer pads a refusal with it so that a hidden resource
        and a missing one cost the same reads (one hit and one miss each)."""
        rid = self._found.get(rtype) if found else None
        self.cols.current[rtype].find_one({"_id": rid or f"absent-{uuid.uuid4().hex}"}, _LEAN)

    def get_many(self, rtype: str, ids: Iterable[str]) -> dict[str, Stored]:
        collection = self.cols.current[rtype]
        wanted = list(dict.fromkeys(ids))
        if self.lookup_ids_one_by_one:
            # Side by side: each is a round trip the engine answers from an index.
            with ThreadPoolExecutor(max_workers=min(8, max(1, len(wanted)))) as pool:
                found = pool.map(lambda rid: collection.find_one({"_id": rid}, _LEAN), wanted)
                docs = [d for d in found if d is not None]
        else:
            docs = list(collection.find({"_id": {"$in": wanted}}, _LEAN))
        return {d["_id"]: self._stored(rtype, d) for d in docs}

    def unrecorded_patients(self, rtype: str, patients: Iterable[str]) -> set[str]:
        """Of ``patients``, those with no record of ``rtype`` in the month registry.
        Every write registers its record's months before the record (:meth:`_register`)
        and a registration is never removed, so such a patient has no record of
        ``rtype``, unless a version older than the registry wrote one: a caller that
        relies on this must meet that record's primary key when it creates one. One
        small read a patient, where reading each record by id costs a read a record."""
        name = BUCKETED.get(rtype)
        wanted = list(dict.fromkeys(patients))
        if name is None or not wanted:
            return set()
        registry = self.db[REGISTRY]

        def recorded(patient: str) -> bool:
            return registry.find_one({"g": group(rtype, patient, name + "<")}, {"_id": 1}) \
                is not None

        with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
            return {p for p, seen in zip(wanted, pool.map(recorded, wanted)) if not seen}

    def get_version(self, rtype: str, rid: str, version: int) -> Stored | None:
        doc = self.cols.history[rtype].find_one({"_id": f"{rid}/{version}"})
        return self._stored(rtype, doc, doc["rid"]) if doc else None

    def exists(self, rtype: str, rid: str) -> bool:
        if rtype not in self.cols.current:
            return False
        doc = self.cols.current[rtype].find_one({"_id": rid}, {"del": 1})
        return doc is not None and not doc.get("del")

    def find(
        self,
        rtype: str,
        query: dict[str, Any],
        sort: Sequence[tuple[str, int]] = (),
        limit: int = 0,
        skip: int = 0,
    ) -> list[Stored]:
        """Current, not deleted resources matching a compiled search filter."""
        flt = _live(rtype, query)
        cursor = self.cols.current[rtype].find(flt, {**_LEAN, "h": 0})
        if sort:
            cursor = cursor.sort(list(sort))
        if skip:
            cursor = cursor.skip(skip)
        if limit:
            cursor = cursor.limit(limit)
        return [self._stored(rtype, d) for d in cursor]

    def iterate(
        self, rtype: str, query: dict[str, Any], sort: Sequence[tuple[str, int]]
    ) -> Iterator[Stored]:
        """Current resources matching ``query`` in ``sort`` order, streamed."""
        flt = _live(rtype, query)
        for doc in self.cols.current[rtype].find(flt, {**_LEAN, "h": 0}).sort(list(sort)):
            yield self._stored(rtype, doc)

    def with_keys(self, rtype: str, query: dict[str, Any]) -> Iterator[tuple[Stored, list[str]]]:
        """Current resources matching ``query``, each with its index keys (``k``)."""
        keyed = {**{f: 0 for f in _LEAN if f != KEY_FIELD}, "h": 0}
        for doc in self.cols.current[rtype].find(_live(rtype, query), keyed):
            yield self._stored(rtype, doc), list(doc.get(KEY_FIELD) or ())

    def marked(self, marker: str) -> bool:
        """Has the database the schema marker ``marker``? Markers are never removed,
        so a marker found is remembered."""
        if marker in self._markers:
            return True
        if self.db[SCHEMA].find_one({"_id": marker}, {"_id": 1}) is None:
            return False
        self._markers.add(marker)
        return True

    def find_keyed(
        self, rtype: str, query: dict[str, Any], sort: Sequence[tuple[str, int]], limit: int,
        start: Sequence[Any] | None = None,
    ) -> list[tuple[Stored, list[Any]]]:
        """Like :meth:`find`, with each row's values of the ``sort`` fields (keyset paging).

        ``start`` is the sort key the query's keyset condition resumes after, if any:
        a patient's records sorted by date are then read month by month from there
        (search/buckets.py), so a page costs what the page holds."""
        flt = _live(rtype, query)
        if sort and sort[0][0] == ORDER_FIELD:
            return self._shard_walk(rtype, flt, sort, limit, start)
        plan = walk_plan(rtype, sort)
        if plan is not None and self.patient_walk(rtype, flt):
            return self._walk(rtype, flt, sort, limit, plan, flt["pat"], start)
        docs = self._by_branches(rtype, query, _KEYED, sort, limit)
        if docs is None:
            docs = list(self.cols.current[rtype].find(flt, _KEYED).sort(list(sort)).limit(limit))
        return [(self._stored(rtype, d), row_key(sort, d)) for d in docs]

    def _by_branches(self, rtype: str, query: dict[str, Any], projection: dict[str, Any],
                     sort: Sequence[tuple[str, int]] = (), limit: int = 0,
                     ) -> list[dict[str, Any]] | None:
        """The matches of ``query`` read branch by branch when it reaches no index
        itself but splits into branches that each do (a clinician's patients, id by
        id: search/keys.py ``indexed_branches``), merged in ``sort`` order and cut to
        ``limit``; None when it does not split."""
        branches = indexed_branches(rtype, query)
        if branches is None:
            return None
        found: dict[Any, dict[str, Any]] = {}
        collection = self.cols.current[rtype]
        for branch in branches:
            cursor = collection.find(_live(rtype, branch), projection)
            if sort:
                cursor = cursor.sort(list(sort))
            for d in cursor.limit(limit) if limit else cursor:
                found.setdefault(d["_id"], d)
        docs = list(found.values())
        if sort:
            docs.sort(key=cmp_to_key(
                lambda a, b: compare_rows(sort, row_key(sort, a), row_key(sort, b))))
        return docs[:limit] if limit else docs

    def _shard_walk(self, rtype: str, flt: dict[str, Any], sort: Sequence[tuple[str, int]],
                    limit: int, start: Sequence[Any] | None) -> list[tuple[Stored, list[Any]]]:
        """An unsorted population page, shard by shard from ``start`` (search/shards.py)."""
        ascending = sort[0][1] > 0
        out: list[tuple[Stored, list[Any]]] = []
        for step in shard_plan(resume_position(start), ascending):
            cursor = self.cols.current[rtype].find({**flt, **step.condition(ascending)}, _KEYED)
            cursor = cursor.sort(list(sort)).limit(limit - len(out))
            out += [(self._stored(rtype, d), row_key(sort, d)) for d in cursor]
            if len(out) >= limit:
                break
        return out

    def _walk(self, rtype: str, flt: dict[str, Any], sort: Sequence[tuple[str, int]],
              limit: int, plan: str, patient: str,
              start: Sequence[Any] | None) -> list[tuple[Stored, list[Any]]]:
        ascending, at = sort[0][1] > 0, start[0] if start else None
        out: list[tuple[Stored, list[Any]]] = []
        for queries, bucket in enumerate(self.buckets(rtype, patient, plan, ascending, at,
                                                      start is not None)):
            if queries == BUCKETS_PER_PAGE:
                # A filter that few buckets satisfy (a rare code, a date range far
                # back): one sorted query over the compartment costs less than many
                # empty buckets.
                cursor = self.cols.current[rtype].find(flt, _KEYED)
                cursor = cursor.sort(list(sort)).limit(limit)
                return [(self._stored(rtype, d), row_key(sort, d)) for d in cursor]
            cursor = self.cols.current[rtype].find({**flt, BUCKET_FIELD: plan + bucket},
                                                   _KEYED)
            cursor = cursor.sort(list(sort)).limit(limit - len(out))
            out += [(self._stored(rtype, d), row_key(sort, d)) for d in cursor]
            if len(out) >= limit:
                return out
        return out

    def months(self, rtype: str, patient: str, plan: str) -> dict[str, dict[str, Any]]:
        """The registry documents of one patient's months of ``rtype`` (``plan``:
        ``date<`` or ``date>``), by month: each with its count of records created into
        it (``n``, search/buckets.py) where it has one."""
        found = self.db[REGISTRY].find({"g": group(rtype, patient, plan)}, {"m": 1, "n": 1, "v": 1})
        return {d["m"]: d for d in found.batch_size(REGISTRY_BATCH)}

    def buckets(self, rtype: str, patient: str, plan: str, ascending: bool,
                at: Any = None, has_start: bool = False,
                months: dict[str, dict[str, Any]] | None = None) -> Iterator[str]:
        """The buckets (months, or the days of a crowded month) of one patient's
        records of ``rtype``, in the order of the bucketed date (``plan``: ``date<``
        by its earliest value, ``date>`` by its latest), from the month of ``at``
        when ``has_start`` (search/buckets.py). Each bucket's days are read from the
        registry only when the walk reaches it; ``months``: as :meth:`months` read them."""
        g = group(rtype, patient, plan)
        if months is None:
            months = self.months(rtype, patient, plan)
        for month in month_order(list(months), ascending, at, has_start):
            if by_day(months[month]):
                days = [d["m"] for d in self.db[REGISTRY].find({"g": g + month}, {"m": 1})]
                yield from month_order(days, ascending, at, has_start)
            else:
                yield month

    def find_ids(self, rtype: str, query: dict[str, Any], limit: int = 0) -> list[str]:
        docs = self._by_branches(rtype, query, {"_id": 1}, (), limit)
        if docs is not None:
            return [d["_id"] for d in docs]
        flt = _live(rtype, query)
        return [d["_id"] for d in self.cols.current[rtype].find(flt, {"_id": 1}).limit(limit)]

    def distinct(self, rtype: str, field: str, query: dict[str, Any]) -> list[Any]:
        """The distinct values of ``field`` over current resources matching ``query``."""
        flt = _live(rtype, query)
        return list(self.cols.current[rtype].distinct(field, flt))

    def key_values(self, rtype: str, name: str, query: dict[str, Any], limit: int) -> list[str]:
        """The distinct values (up to ``limit``) of exact-match parameter ``name`` over
        current resources matching ``query``. Only that parameter's keys leave the
        database: a ``distinct`` of ``k`` would return every key of every match."""
        flt = _live(rtype, query)
        # FerretDB 1.x closes the connection on an ``$unwind`` of documents without
        # ``_id``: the projection keeps it.
        found = self.cols.current[rtype].aggregate([
            {"$match": flt}, {"$project": {KEY_FIELD: 1}},
            {"$unwind": "$" + KEY_FIELD},
            {"$match": {KEY_FIELD: {"$regex": "^" + re.escape(name + "=")}}},
            {"$group": {"_id": "$" + KEY_FIELD}}, {"$limit": limit}])
        return key_values(name, [d["_id"] for d in found])

    def estimated_count(self, rtype: str) -> int:
        """The number of current documents of a type, from collection metadata, or
        under FerretDB on PostgreSQL from PostgreSQL's statistics: FerretDB counts by
        reading every document (storage/table_estimates.py)."""
        collection = self.cols.current[rtype]
        if self.table_estimates is not None:
            known = self.table_estimates.count(collection.name)
            if known is not None:
                return known
        return collection.estimated_document_count()

    def claim_holder(self, key: str) -> str | None:
        """The id of the active Patient holding unique identifier ``system|value``."""
        doc = self.cols.claims.find_one({"_id": self.protection.claim_key(key)})
        return doc["rid"] if doc else None

    def referrers(self, target: str, limit: int = 10,
                  besides: Mapping[str, Collection[str]] | None = None,
                  skip: Collection[str] = ()) -> list[tuple[str, str]]:
        """Current resources whose references point at ``target`` ("Type/id"), up to
        ``limit`` of each type but the types in ``skip``, leaving out the ids ``besides``
        names per type (the records a plan writes, which it judges by what it writes:
        the limit must not be filled by them, or a referrer past it would go unseen)."""
        out: list[tuple[str, str]] = []
        for rtype, col in self.cols.current.items():
            if rtype in skip:
                continue
            flt: dict[str, Any] = {"refs": target, "del": False}
            if besides and (ids := sorted(besides.get(rtype, ()))):
                flt["_id"] = {"$nin": ids}
            out += [(rtype, d["_id"]) for d in col.find(flt, {"_id": 1}).limit(limit)]
        return out

    def count(self, rtype: str, query: dict[str, Any]) -> int:
        docs = self._by_branches(rtype, query, {"_id": 1})
        if docs is not None:
            return len(docs)
        return self.cols.current[rtype].count_documents(_live(rtype, query))

    def compartments(self, rtype: str, query: dict[str, Any], limit: int) -> list[str]:
        """The patients (up to ``limit``) whose current resources match ``query``."""
        docs = self._by_branches(rtype, query, {"pat": 1})
        if docs is not None:
            field = "_id" if rtype == "Patient" else "pat"
            return list(dict.fromkeys(str(d[field]) for d in docs if d.get(field)))[:limit]
        flt = _live(rtype, query)
        key = "$_id" if rtype == "Patient" else "$pat"
        found = self.cols.current[rtype].aggregate(
            [{"$match": flt}, {"$group": {"_id": key}}, {"$limit": limit}])
        return [str(d["_id"]) for d in found if d.get("_id")]

    def history(
        self,
        types: Sequence[str] = SUPPORTED_TYPES,
        rid: str | None = None,
        since: datetime | None = None,
        after: HistoryKey | None = None,
        limit: int = 20,
        filters: dict[str, dict[str, Any]] | None = None,
    ) -> list[Stored]:
        """Versions newest first (http.html#history), resuming after a keyset cursor;
        ``filters`` narrows a type's versions (access control)."""
        streams = [self._history_stream(t, rid, since, after, (filters or {}).get(t)) for t in types]
        merged = heapq.merge(*streams, key=lambda p: p[0], reverse=True)
        return [s for _, s in _take(merged, limit)]

    def _history_stream(
        self, rtype: str, rid: str | None, since: datetime | None, after: HistoryKey | None,
        extra: dict[str, Any] | None = None,
    ) -> Iterator[tuple[HistoryKey, Stored]]:
        clauses: list[dict[str, Any]] = [extra] if extra else []
        if rid is not None:
            clauses.append({"rid": rid})
        if since is not None:
            clauses.append({"lu": {"$gte": since}})
        if after is not None:
            lu, hid = after
            clauses.append({"$or": [{"lu": {"$lt": lu}}, {"lu": lu, "_id": {"$lt": hid}}]})
        flt = lifted(None, {"$and": clauses}) if clauses else {}
        cursor = self.cols.history[rtype].find(flt).sort([("lu", DESCENDING), ("_id", DESCENDING)])
        for doc in cursor:
            yield (doc["lu"], doc["_id"]), self._stored(rtype, doc, doc["rid"])

    def history_key(self, stored: Stored) -> HistoryKey:
        return (stored.last_updated, f"{stored.id}/{stored.version}")

    # -- writes ----------------------------------------------------------------------

    def commit(self, writes: Sequence[Write], verify: Verify | None = None,
               journalled: bool = False) -> None:
        self._register(writes)
        self.uow.commit(writes, verify, journalled)

    def standing(self, rtype: str, rid: str) -> tuple[bool, str | None, int]:
        """Whether ``rtype/rid`` exists and is not deleted, the journal entry of the
        unit that wrote its current version, if one did, and that version's number
        (0: none)."""
        doc = self.cols.current[rtype].find_one({"_id": rid}, {"del": 1, "tx": 1, "v": 1})
        if doc is None:
            return False, None, 0
        return not doc.get("del"), doc.get("tx"), int(doc.get("v") or 0)

    def _register(self, writes: Sequence[Write]) -> None:
        """Record the month and day buckets the writes put records in, and their
        $lastn groups, before the records: a sorted page must never skip a bucket
        that holds one (search/buckets.py), nor $lastn a group (search/latest.py).
        Creates also count into their months, until this process has added
        :data:`DENSE` to one: past that the month is read by day, whatever it holds.
        The count only chooses how a month is read, so a single create into a month
        already registered raises it every :data:`COUNT_STEP` creates of this process
        (and at once when they pass DENSE), not by one more round trip each; several
        writes at once (a Bundle, an import's group) write every count they make."""
        new: dict[str, dict[str, Any]] = {}
        counts: Counter[str] = Counter()
        for w in writes:
            if w.resource is None or not w.patient:
                continue
            if w.type in GROUPED:
                code = GROUPED[w.type]
                entry = group_doc(w.type, w.patient, group_of(w.resource),
                                  keys_of(w.type, {code: w.search.get(code, [])}))
                if entry["_id"] not in self._registered:
                    new[entry["_id"]] = entry
            buckets = buckets_of(w.type, sort_values(w.type, w.search))
            for doc in registry_docs(w.type, w.patient, buckets):
                month = is_month(doc)
                if month and w.expected is None and self._counted[doc["_id"]] <= DENSE:
                    counts[doc["_id"]] += 1
                if doc["_id"] not in self._registered:
                    new[doc["_id"]] = {**doc, "v": DAYS} if month else doc
        # Months already registered count with $inc; a new one is inserted with its
        # count. Two processes inserting one month race on its ``_id``: the refused
        # one counts with $inc too. (An upsert would race the same way, and FerretDB
        # 1.24 answers a refused upsert in a bulk without the counts pymongo reads, and
        # can hang on an update command of many statements: one update per month.)
        with self._counting:
            self._counted.update(counts)
            self._uncounted.update(counts)
            due = [key for key in counts if len(writes) > 1 or key in new
                   or self._uncounted[key] >= COUNT_STEP or self._counted[key] > DENSE]
            counts = Counter({key: self._uncounted.pop(key) for key in due})
        added = {key: n for key, n in counts.items() if key not in new}
        if new:
            docs = [{**doc, "n": counts[key]} if key in counts else doc
                    for key, doc in new.items()]
            try:
                self.db[REGISTRY].insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", ())
                if any(e.get("code") != 11000 for e in errors):
                    raise
                added.update({docs[e["index"]]["_id"]: counts[docs[e["index"]]["_id"]]
                              for e in errors if docs[e["index"]]["_id"] in counts})
        for key, n in added.items():
            self.db[REGISTRY].update_one({"_id": key}, {"$inc": {"n": n}})
        if len(self._registered) > 100_000:
            self._registered.clear()
            with self._counting:  # a hint: what has not reached the registry is let go
                self._counted.clear()
                self._uncounted.clear()
        self._registered.update(new)


def _take(it: Iterator[tuple[HistoryKey, Stored]], n: int) -> Iterator[tuple[HistoryKey, Stored]]:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item
