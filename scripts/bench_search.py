"""Search latency at population size: builds the data set, then times each request of
the search performance table against a live server.

    # the data set: the shared Synthea bundles plus generated Patients, Observations
    # and DiagnosticReports, to 20,000 Patients and 200,000 Observations at --scale 1
    # (5 patients with 2,000+ Observations each), loaded with `fhirserver import`
    .venv/bin/python scripts/bench_search.py build [--work .bench] [--scale 1]

    # every row of the table, from 4 client threads, against a running server
    .venv/bin/fhirserver serve &
    .venv/bin/python scripts/bench_search.py run [--url http://127.0.0.1:8080] [--work .bench]

    # a small data set to try it (about 450 Patients and 10,000 Observations), on a
    # server with its own data directory
    export FHIR_DATA_DIR=/tmp/bs-data FHIR_PORT=8099
    .venv/bin/fhirserver serve &
    .venv/bin/python scripts/bench_search.py build --work /tmp/bs-work --scale 0.02
    .venv/bin/python scripts/bench_search.py run --work /tmp/bs-work --url http://127.0.0.1:8099

Both steps use the server's settings from the environment, as `fhirserver` does:
``build`` imports into the database they name (the running server's embedded one
when there is one, else it starts one for each chunk: build with the server
running), and ``run`` mints its access tokens with
`fhirserver token`, which must sign for the server's issuer (FHIR_PORT, FHIR_HOST or
FHIR_BASE_URL; the port is taken from --url when none is set) with its key.

build: generates the data (``bench_search_data.py``: seeded, so every run builds the
same resources with the same ids) as NDJSON chunks under --work, then imports them
eight chunks a `fhirserver import`, recording the loaded chunks in a state file kept
per database. Interrupted, it continues with the chunks not yet loaded; a call cut off halfway is
imported again, which the importer makes harmless (same ids, same content: nothing
new). Prints the import rate, which ``run`` shows as the import row.

run: gives a clinician (Practitioner/bench-search-dr) a care relationship with the
patients it queries (``Patient/$care-team``, by an operator), checks that the data
set is there, then for each row sends a warm-up and --requests timed requests from
-c threads and prints p50, p99 and requests/s against the targets. Every response
is checked (status, and the count the data set predicts); one wrong answer stops the
run, since the timing of a failing request says nothing. --rows picks rows (their
keys are in the table). These are benchmark figures to compare, not pass/fail tests.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import bench_search_data as data
import orjson
from bench_search_data import BenchError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

ROOT = Path(__file__).resolve().parent.parent
SHARED_SYNTHEA = ROOT.parent / "shared" / "data" / "synthea"
#: chunk files one `fhirserver import` imports: as an operator imports a folder, its
#: processes started once for many groups (the run resumes after the last call)
IMPORT_BATCH = 8
#: the settings that say which database `fhirserver import` writes to
DATABASE_SETTINGS = ("MONGODB_URI", "MONGODB_DB", "FHIR_DATA_DIR")
console = Console()


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console)


def fhirserver_cli(given: str | None) -> str:
    if given:
        return given
    local = ROOT / ".venv" / "bin" / "fhirserver"
    return str(local) if local.exists() else (shutil.which("fhirserver") or "fhirserver")


# -- the data set --------------------------------------------------------------------


def chunks(plan: data.Plan) -> list[tuple[str, int, int]]:
    """Consecutive patients grouped into import chunks of about the same size:
    (name, first index, end index)."""
    sizes = [1 + p.observations * 1.1 for p in plan.patients]
    target = min(5000.0, max(500.0, sum(sizes) / 20))
    out: list[tuple[str, int, int]] = []
    first, acc = 0, 0.0
    for i, size in enumerate(sizes):
        acc += size
        if acc >= target or i == len(sizes) - 1:
            out.append((f"chunk-{len(out) + 1:04d}", first, i + 1))
            first, acc = i + 1, 0.0
    return out


def write_chunk(path: Path, resources: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wb", compresslevel=1) as fh:
        for res in resources:
            fh.write(orjson.dumps(res) + b"\n")
    tmp.replace(path)


def prepare(work: Path, seed: int, scale: float, synthea: list[Path]) -> dict[str, Any]:
    """The manifest of the data set in ``work``, generating the chunk files it lacks.
    The manifest records what ``run`` needs to predict search results."""
    path = work / "manifest.json"
    params = {"seed": seed, "scale": scale, "synthea": [p.name for p in synthea]}
    if path.exists():
        manifest: dict[str, Any] = json.loads(path.read_text())
        if manifest["params"] != params:
            raise BenchError(f"{work} holds a data set built with {manifest['params']}, not "
                             f"{params}: use another --work, or delete it")
        if all((work / f"{name}.ndjson.gz").exists() for name, *_ in manifest["chunks"]):
            return manifest
    work.mkdir(parents=True, exist_ok=True)
    if synthea:
        console.print(f"reading the {len(synthea)} Synthea bundles")
    summary = data.synthea_summary(synthea)
    sizes = data.generated_sizes(scale, len(summary["patients"]),
                                 summary["kept"].get("Observation", 0))
    plan = data.make_plan(seed, scale, *sizes)
    codes: Counter[str] = Counter()
    table: list[list[Any]] = []
    reports = 0
    with progress() as bar:
        task = bar.add_task("generate", total=len(plan.patients), note="patients")
        for name, first, end in chunks(plan):
            resources: list[dict[str, Any]] = []
            for spec in plan.patients[first:end]:
                rec = data.record(plan, spec)
                resources += rec.resources
                codes.update(o.code for o in rec.observations)
                reports += len(rec.reports)
            target = work / f"{name}.ndjson.gz"
            if not target.exists():
                write_chunk(target, resources)
            table.append([name, first, end, len(resources)])
            bar.advance(task, end - first)
    manifest = {"params": params, "patients": len(plan.patients),
                "observations": sum(codes.values()), "reports": reports,
                "heavy": [plan.patients[i].observations for i in plan.heavy],
                "codes": dict(codes), "chunks": table, "synthea": summary}
    tmp = path.with_name("manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(path)
    return manifest


# -- loading -------------------------------------------------------------------------


def database_key() -> tuple[str, str]:
    """Which database `fhirserver import` writes to, as the settings name it: a key for
    the state file, and words for people (no URI, which may hold a password)."""
    values = {name: os.environ.get(name, "") for name in DATABASE_SETTINGS}
    if values["FHIR_DATA_DIR"]:
        values["FHIR_DATA_DIR"] = str(Path(values["FHIR_DATA_DIR"]).resolve())
    elif not values["MONGODB_URI"]:
        values["FHIR_DATA_DIR"] = str(ROOT / ".data")
    key = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
    words = ", ".join(f"{k}={v}" if k in ("FHIR_DATA_DIR", "MONGODB_DB") else f"{k} (set)"
                      for k, v in values.items() if v)
    return key, words


def state_path(work: Path) -> Path:
    return work / f"loaded-{database_key()[0]}.json"


def load_state(work: Path) -> dict[str, Any]:
    path = state_path(work)
    if path.exists():
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    return {"database": database_key()[1], "chunks": {}}


def save_state(work: Path, state: dict[str, Any]) -> None:
    path = state_path(work)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


SUMMARY = re.compile(r"(\d+) resources in ([\d.]+) s")


def import_files(cli: str, paths: list[Path], expected: int) -> tuple[int, float]:
    """`fhirserver import` of ``paths``: (resources, seconds) from its own summary."""
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([cli, "import", *map(str, paths)], env=env, capture_output=True,
                          text=True, check=False)
    output = proc.stdout + proc.stderr
    found = SUMMARY.findall(output)
    if proc.returncode != 0 or not found:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise BenchError(f"fhirserver import {paths[0].name}...: exit status {proc.returncode}"
                         f"\n{tail}")
    resources, seconds = int(found[-1][0]), float(found[-1][1])
    if resources != expected:
        raise BenchError(f"fhirserver import kept {resources} resources of {paths[0].name}..., "
                         f"not the {expected} it holds\n{output[-2000:]}")
    return resources, seconds


def load(work: Path, manifest: dict[str, Any], cli: str, reload: bool) -> None:
    state: dict[str, Any] = {"database": database_key()[1], "chunks": {}} if reload \
        else load_state(work)
    synthea = [Path(p) for p in manifest["synthea"]["files"]]
    todo: list[tuple[str, list[Path], int]] = []
    if synthea:
        todo.append(("synthea", synthea, sum(manifest["synthea"]["kept"].values())))
    todo += [(name, [work / f"{name}.ndjson.gz"], n) for name, _, _, n in manifest["chunks"]]
    done = state["chunks"]
    console.print(f"importing into the database of {state['database']} with {cli}")
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("import", total=sum(n for *_, n in todo),
                            completed=sum(n for name, _, n in todo if name in done), note="")
        left = [item for item in todo if item[0] not in done]
        for at in range(0, len(left), IMPORT_BATCH):
            batch = left[at:at + IMPORT_BATCH]
            n = sum(k for *_, k in batch)
            t0 = time.perf_counter()
            resources, seconds = import_files(cli, [p for _, paths, _ in batch for p in paths], n)
            wall = time.perf_counter() - t0
            for name, _, k in batch:  # a chunk's share of the call, for resuming
                done[name] = {"resources": k, "seconds": round(seconds * k / n, 3),
                              "wall": round(wall * k / n, 3)}
            save_state(work, state)
            bar.update(task, advance=n, note=f"{resources / seconds:.0f} resources/s")
    figures = import_figures(state)
    if figures:
        resources, seconds, wall = figures
        console.print(f"imported {resources} resources: {resources / seconds:.0f} resources/s by "
                      f"fhirserver import's own count ({seconds:.0f} s), "
                      f"{resources / wall:.0f}/s counting process starts; this session "
                      f"{time.perf_counter() - started:.0f} s")


def import_figures(state: dict[str, Any]) -> tuple[int, float, float] | None:
    done = state["chunks"].values()
    if not done:
        return None
    return (sum(c["resources"] for c in done), sum(c["seconds"] for c in done),
            sum(c["wall"] for c in done))


# -- command line --------------------------------------------------------------------


def main() -> int:
    try:
        steps()
    except BenchError as exc:
        console.print(f"[bold red]stopped:[/bold red] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to continue")
        return 130
    return 0


def steps() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    b = sub.add_parser("build", help="generate the data set and import it (resumable)")
    b.add_argument("--scale", type=float, default=1.0,
                   help="fraction of the generated part (1: 20,000 Patients, 200,000 "
                   "Observations in all; the 5 heavy records shrink no further than 0.05)")
    b.add_argument("--seed", type=int, default=20240601)
    b.add_argument("--synthea", type=Path, default=SHARED_SYNTHEA,
                   help="folder of Synthea bundles to import with the generated data")
    b.add_argument("--reload", action="store_true",
                   help="import every chunk again, whatever the state file says")
    r = sub.add_parser("run", help="time every row of the table against a running server")
    r.add_argument("--url", default="http://127.0.0.1:8080")
    r.add_argument("--requests", type=int, default=200, help="timed requests per row")
    r.add_argument("--warmup", type=int, default=10, help="untimed requests per row first")
    r.add_argument("-c", "--threads", type=int, default=4, help="client threads")
    r.add_argument("--timeout", type=float, default=600, help="seconds per request")
    r.add_argument("--rows", default="", help="comma-separated row keys (default: all)")
    r.add_argument("--cpu", action="store_true",
                   help="also print the CPU ms per request of the server's Python workers, "
                   "FerretDB and PostgreSQL (server on this machine; scripts/bench_cpu.py)")
    r.add_argument("--token", default=os.environ.get("FHIR_TOKEN", ""),
                   help="operator token [FHIR_TOKEN] (default: minted with fhirserver token)")
    for p in (b, r):
        p.add_argument("--work", type=Path, default=ROOT / ".bench",
                       help="where the data set's files and state live")
        p.add_argument("--cli", help="the fhirserver command (default: .venv/bin/fhirserver)")
    args = ap.parse_args()
    cli = fhirserver_cli(args.cli)
    if args.step == "build":
        if not 0 < args.scale <= 1:
            ap.error("--scale must be in (0, 1]")
        synthea = sorted(args.synthea.glob("*.json*")) if args.synthea.is_dir() else []
        if not synthea:
            console.print(f"[yellow]no Synthea bundles in {args.synthea}: generated data only")
        manifest = prepare(args.work, args.seed, args.scale, synthea)
        load(args.work, manifest, cli, args.reload)
        return
    import bench_search_run

    manifest_path = args.work / "manifest.json"
    if not manifest_path.exists():
        raise BenchError(f"no data set in {args.work}: run the build step first")
    manifest = json.loads(manifest_path.read_text())
    bench_search_run.run(args, manifest, cli, import_figures(load_state(args.work)))


if __name__ == "__main__":
    sys.exit(main())
