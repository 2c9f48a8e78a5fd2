"""The rows of ``bench_search.py``'s table: for each, the request shape, its target,
and what the data set predicts it answers, so that every answer can be checked.

The requests of a row vary (patients, codes, dates drawn with the data set's seed);
patient-scoped rows query a sample of generated patients plus the heavy ones, and
never the patients the create and update rows write into.
"""

from __future__ import annotations

import http.client
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import bench_search_data as data
import orjson
from bench_search_data import LOINC, RID, BenchError, PatientSpec, Record

FHIR_JSON = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}


@dataclass(frozen=True)
class Target:
    p50: float | None = None  # ms
    p99: float | None = None  # ms
    rate: float | None = None  # requests (or resources) per second

    def text(self) -> str:
        parts = [f"p50 < {self.p50:g}" if self.p50 else "", f"p99 < {self.p99:g}"
                 if self.p99 else "", f">= {self.rate:g}/s" if self.rate else ""]
        return ", ".join(p for p in parts if p)

    def met(self, p50: float | None, p99: float | None, rate: float) -> bool:
        return ((self.p50 is None or (p50 is not None and p50 < self.p50))
                and (self.p99 is None or (p99 is not None and p99 < self.p99))
                and (self.rate is None or rate >= self.rate))


class Api:
    """HTTP/1.1 with one kept-alive connection per client thread; a status other than
    the expected one is a :class:`BenchError`. Returns (seconds the exchange took,
    parsed body).

    The client shares the server's two cores, so it is kept lean (``http.client``
    and orjson, as a load generator such as wrk would be): what it spends on each
    request is taken from the server's throughput."""

    def __init__(self, base: str, timeout: float) -> None:
        parts = urlsplit(base.rstrip("/"))
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "localhost", parts.port
        self.prefix = parts.path
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = self.local.conn = kind(self.host, self.port, timeout=self.timeout)
        return conn

    def _drop(self) -> None:
        conn, self.local.conn = getattr(self.local, "conn", None), None
        if conn is not None:
            conn.close()

    def call(self, method: str, path: str, token: str, expect: int = 200,
             params: dict[str, str] | None = None, body: Any = None) -> tuple[float, Any]:
        url = f"{self.prefix}/{path}" + (f"?{urlencode(params)}" if params else "")
        headers = {**FHIR_JSON, "Authorization": f"Bearer {token}"}
        data = orjson.dumps(body) if body is not None else None
        started = time.perf_counter()
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request(method, url, body=data, headers=headers)
                r = conn.getresponse()
                raw = r.read()
                break
            except (http.client.HTTPException, ConnectionError) as exc:
                # A kept-alive connection the server had closed (gunicorn closes idle
                # ones): once more on a new one, timed afresh. A write goes again only
                # when the old connection was closed before any answer (as urllib3
                # decides): otherwise it may have been done.
                self._drop()
                closed = reused and isinstance(exc, (http.client.RemoteDisconnected,
                                                     BrokenPipeError, ConnectionResetError))
                if attempt == 2 or (method != "GET" and not closed):
                    raise
                started = time.perf_counter()
        took = time.perf_counter() - started
        if r.will_close:
            self._drop()
        if r.status != expect:
            raise BenchError(f"{method} {url}: HTTP {r.status}, not {expect}: "
                             f"{raw[:400].decode(errors='replace')}")
        if not raw:
            raise BenchError(f"{method} {url}: HTTP {r.status} without a body")
        return took, orjson.loads(raw)


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode", "match") == "match"]


def expect_count(what: str, bundle: dict[str, Any], expected: int,
                 estimated: bool = False) -> None:
    """The search found ``expected`` resources: its total, else its matches (paged).
    ``estimated``: a population page of several gives an estimated total (about ±20%
    for a page of 20), which must lie within half to twice the true count."""
    total, page = bundle.get("total"), len(matches(bundle))
    paged = any(link.get("relation") == "next" for link in bundle.get("link", []))
    close = estimated and paged and total is not None and expected / 2 <= total <= expected * 2
    if total is not None and total != expected and not close:
        raise BenchError(f"{what}: total {total}, the data set has {expected}")
    if page > expected or (page < expected and not paged):
        raise BenchError(f"{what}: {page} found, the data set has {expected}")


Job = Callable[[Api], float]


@dataclass
class Row:
    key: str
    label: str
    target: Target
    job: Callable[[int], Job]  # the i-th request of the row


class DataSet:
    """The plan of the data set in the manifest, and what it predicts."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        params = manifest["params"]
        self.seed: int = params["seed"]
        synthea = manifest["synthea"]
        sizes = data.generated_sizes(params["scale"], len(synthea["patients"]),
                                     synthea["kept"].get("Observation", 0))
        self.plan = data.make_plan(self.seed, params["scale"], *sizes)
        self.codes = Counter(manifest["codes"]) + Counter(synthea["codes"])
        self.names = [([data.fold(p.family)], p.birth_date) for p in self.plan.patients]
        self.names += [([data.fold(f) for f in p["family"]], p["birthDate"])
                       for p in synthea["patients"]]

    def named(self, prefix: str, birth_date: str | None = None) -> int:
        folded = data.fold(prefix)
        return sum(1 for families, born in self.names
                   if any(f.startswith(folded) for f in families)
                   and (birth_date is None or born == birth_date))

    def prefix(self, family: str, few: int = 60) -> str:
        """The shortest prefix (2 letters or more) of ``family`` shared by at most
        ``few`` patients: a family-prefix search that matches a few dozen."""
        for end in range(2, len(family)):
            if self.named(family[:end]) <= few:
                return family[:end]
        return family


def observation(patient: str, value: float) -> dict[str, Any]:
    code, display, unit = data.WRITE_CODE
    return {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": data.CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": datetime.now(data.CST).isoformat(timespec="seconds"),
        "valueQuantity": {"value": value, "unit": unit, "system": data.UCUM, "code": unit},
    }


#: Records the "crowded" row's patient gets in one month (an intensive-care stay):
#: ten a day through December 2024, the newest month of the data set.
CROWDED = 300


def crowded_observations(patient: str) -> list[dict[str, Any]]:
    """The crowded month, with fixed ids: written by PUT, it is made once per database."""
    code, display, unit = data.WRITE_CODE
    out = []
    for i in range(CROWDED):
        at = datetime(2024, 12, 1 + i // 10, 8 + i % 10, 30, tzinfo=data.CST)
        out.append({
            "resourceType": "Observation", "id": f"bench-crowded-{patient[:8]}-{i:03d}",
            "status": "final",
            "category": [{"coding": [{"system": data.CATEGORY, "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": at.isoformat(),
            "valueQuantity": {"value": 36.5, "unit": unit, "system": data.UCUM, "code": unit},
        })
    return out


def rows(ds: DataSet, records: list[Record], writers: list[PatientSpec], named: list[PatientSpec],
         clinician: str, operator: str, crowded: Record | None = None) -> list[Row]:
    """Every row of the table, each a function from the request number to a job."""
    rng = random.Random(f"{ds.seed}:requests")
    heavy = [r for r in records if r.spec.index in ds.plan.heavy]
    created: list[tuple[str, str]] = []  # (Observation id, patient id) made by "create"

    def pick(i: int) -> Record:
        return records[i % len(records)]

    reads: list[tuple[str, str]] = []
    for rec in records:
        reads.append(("Patient", rec.spec.id))
        reads.append(("Observation", rng.choice(rec.observations).id))
        if rec.reports:
            reads.append(("DiagnosticReport", rng.choice(rec.reports)))

    def read(i: int) -> Job:
        rtype, rid = reads[i % len(reads)]

        def job(api: Api) -> float:
            took, body = api.call("GET", f"{rtype}/{rid}", clinician)
            if body.get("id") != rid:
                raise BenchError(f"GET {rtype}/{rid} answered {body.get('id')}")
            return took
        return job

    def create(i: int) -> Job:
        patient = writers[i % len(writers)].id

        def job(api: Api) -> float:
            took, body = api.call("POST", "Observation", clinician, 201,
                                  body=observation(patient, 36.0 + i % 20 / 10))
            created.append((body["id"], patient))
            return took
        return job

    def update(i: int) -> Job:
        def job(api: Api) -> float:
            if not created:  # the create row was not chosen: make one to update
                create(i)(api)
            oid, patient = created[i % len(created)]
            body = {**observation(patient, 37.0 + i % 10 / 10), "id": oid}
            took, _ = api.call("PUT", f"Observation/{oid}", clinician, body=body)
            return took
        return job

    def search(path: str, token: str, params: dict[str, str], check: Callable[[Any], None]) -> Job:
        def job(api: Api) -> float:
            took, bundle = api.call("GET", path, token, params=params)
            check(bundle)
            return took
        return job

    def by_identifier(i: int) -> Job:
        spec = pick(i).spec

        def check(bundle: Any) -> None:
            expect_count("Patient?identifier", bundle, 1)
            if matches(bundle)[0]["id"] != spec.id:
                raise BenchError(f"Patient?identifier found {matches(bundle)[0]['id']}, "
                                 f"not {spec.id}")
        # The operator, as a registration desk: a clinician sees numbers masked and
        # spends an identity look-up on each (FHIR_LOOKUPS_PER_MINUTE), so a timed
        # loop of theirs would time the throttle.
        return search("Patient", operator, {"identifier": f"{RID}|{spec.resident_id}"}, check)

    name_queries = [(ds.prefix(p.family), p.birth_date) for p in named]
    name_expected = [ds.named(prefix, born) for prefix, born in name_queries]

    def by_name(i: int) -> Job:
        (prefix, born), expected = name_queries[i % len(named)], name_expected[i % len(named)]
        return search("Patient", operator, {"family": prefix, "birthdate": born},
                      lambda b: expect_count(f"Patient?family={prefix}&birthdate={born}", b,
                                             expected))

    def by_code(i: int) -> Job:
        rec = pick(i)
        code = random.Random(f"{ds.seed}:code:{i}").choice(rec.observations).code
        expected = sum(1 for o in rec.observations if o.code == code)
        return search("Observation", clinician, {"patient": rec.spec.id, "code": f"{LOINC}|{code}"},
                      lambda b: expect_count("Observation?patient&code", b, expected))

    def by_category(i: int) -> Job:
        rec = pick(i)
        chosen = random.Random(f"{ds.seed}:category:{i}").choice(rec.observations)
        since = chosen.effective.replace(hour=0, minute=0, second=0)
        expected = sum(1 for o in rec.observations
                       if o.category == chosen.category and o.effective >= since)
        params = {"patient": rec.spec.id, "category": chosen.category,
                  "date": f"ge{since.isoformat()}"}
        return search("Observation", clinician, params,
                      lambda b: expect_count("Observation?patient&category&date", b, expected))

    def newest_page(patient: str, dates: list[datetime], total: int | None) -> Job:
        """``Observation?patient&_sort=-date&_count=20``: the 20 newest of ``dates``."""
        newest = sorted(dates, reverse=True)[:20]

        def check(bundle: Any) -> None:
            if total is not None:
                expect_count("Observation?patient&_sort=-date", bundle, total)
            got = [datetime.fromisoformat(r["effectiveDateTime"]) for r in matches(bundle)]
            if got != newest:
                raise BenchError(f"Observation?patient={patient}&_sort=-date&_count=20: "
                                 f"not the 20 newest ({got[:3]}... instead of {newest[:3]}...)")
        return search("Observation", clinician,
                      {"patient": patient, "_sort": "-date", "_count": "20"}, check)

    def latest(i: int) -> Job:
        rec = heavy[i % len(heavy)]
        return newest_page(rec.spec.id, [o.effective for o in rec.observations],
                           len(rec.observations))

    def latest_crowded(i: int) -> Job:
        assert crowded is not None
        stays = [datetime.fromisoformat(o["effectiveDateTime"])
                 for o in crowded_observations(crowded.spec.id)]
        return newest_page(crowded.spec.id, [o.effective for o in crowded.observations] + stays,
                           None)

    def everything(i: int) -> Job:
        rec = pick(i)
        # The Patient, its results, and the CareTeam that the run's $care-team call
        # (which puts the clinician on the patient's team) keeps in its compartment.
        expected = 2 + len(rec.observations) + len(rec.reports)

        def check(bundle: Any) -> None:
            expect_count(f"Patient/{rec.spec.id}/$everything", bundle, expected)
            if not matches(bundle):
                raise BenchError(f"Patient/{rec.spec.id}/$everything: an empty first page")
        return search(f"Patient/{rec.spec.id}/$everything", clinician, {}, check)

    def lastn(i: int) -> Job:
        rec = pick(i)
        expected = len({o.code for o in rec.observations})
        return search("Observation/$lastn", clinician, {"patient": rec.spec.id},
                      lambda b: expect_count("Observation/$lastn", b, expected))

    population_codes = sorted(set(data.VITALS) | set(data.LAB_CODES))

    def population(i: int) -> Job:
        code = population_codes[i % len(population_codes)]
        expected = ds.codes[code]

        def check(bundle: Any) -> None:
            expect_count(f"Observation?code={code}", bundle, expected, estimated=True)
            found = matches(bundle)
            if len(found) != min(20, expected) or any(
                    code not in {c.get("code") for c in r["code"]["coding"]} for r in found):
                raise BenchError(f"Observation?code={code}&_count=20: a page of {len(found)} "
                                 "that is not 20 Observations of that code")
        return search("Observation", operator, {"code": f"{LOINC}|{code}", "_count": "20"}, check)

    heavy_size = min(len(r.observations) for r in heavy)
    prefix_sizes = [ds.named(prefix) for prefix, _ in name_queries]
    return [
        Row("read", "read by id (Patient, Observation, DiagnosticReport)",
            Target(8, 40, 300), read),
        Row("create", "create Observation", Target(None, 80, 150), create),
        Row("update", "update Observation", Target(None, 80, 150), update),
        Row("identifier", "Patient?identifier=S|V", Target(15, 60), by_identifier),
        Row("name", f"Patient?family=F&birthdate=D (prefix: ~{statistics.median(prefix_sizes):.0f} "
            "Patients)", Target(40, 150), by_name),
        Row("code", "Observation?patient=X&code=Y", Target(25, 100), by_code),
        Row("category", "Observation?patient=X&category=C&date=geD", Target(25, 100), by_category),
        Row("sort", f"Observation?patient=X&_sort=-date&_count=20 (X has {heavy_size}+)",
            Target(40, 150), latest),
        *([Row("crowded", f"the same, X with {CROWDED} in its newest month", Target(40, 150),
               latest_crowded)] if crowded else []),
        Row("everything", "Patient/X/$everything (first page)", Target(80, 250), everything),
        Row("lastn", "Observation/$lastn?patient=X", Target(80, 250), lastn),
        Row("population", "Observation?code=Y&_count=20 (no patient)", Target(300, 1000),
            population),
    ]
