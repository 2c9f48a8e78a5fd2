"""What FHIR XML costs per answer: a search Bundle of Synthea Observations written and
read as JSON and as XML by the server's converter, and through fhir.resources models
(``model_dump_xml``/``model_validate_xml``) for comparison.

    .venv/bin/python scripts/bench_xml.py [--entries 100] [--runs 30]

Prints the median and p90 CPU time per Bundle of each way. No server or database is
needed: this times the conversion alone, which is what an XML answer adds to a JSON one.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table

from fhirserver.model import json_text, xml_text

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea"
DEMO = Path(__file__).resolve().parents[1] / "fhirserver" / "demo"


def observations(count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    folder = SYNTHEA if SYNTHEA.is_dir() else DEMO
    for path in sorted(folder.glob("*.json.gz")):
        with gzip.open(path) as fh:
            bundle = json.load(fh)
        found += [e["resource"] for e in bundle.get("entry", [])
                  if e.get("resource", {}).get("resourceType") == "Observation"]
        if len(found) >= count:
            break
    return found[:count]


def search_bundle(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
            "link": [{"relation": "self", "url": "http://localhost/Observation?_count=100"}],
            "entry": [{"fullUrl": f"http://localhost/Observation/{r['id']}", "resource": r,
                       "search": {"mode": "match"}} for r in entries]}


def cpu_ms(fn: Callable[[], object], runs: int, label: str) -> list[float]:
    times = []
    for _ in track(range(runs), description=label, transient=True):
        t = time.process_time()
        fn()
        times.append((time.process_time() - t) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=100)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    from fhir.resources.R4B.bundle import Bundle

    bundle = json_text.loads(json.dumps(search_bundle(observations(args.entries))).encode())
    as_xml = xml_text.dumps(bundle)
    model = Bundle.model_validate(json.loads(json_text.dumps(bundle)))
    model_xml = model.model_dump_xml()
    ways: list[tuple[str, Callable[[], object], int]] = [
        ("JSON write (orjson)", lambda: json_text.dumps(bundle), args.runs),
        ("XML write (server)", lambda: xml_text.dumps(bundle), args.runs),
        ("XML read (server)", lambda: xml_text.loads(as_xml), args.runs),
        ("XML write (fhir.resources: model + model_dump_xml)",
         lambda: Bundle.model_validate(json.loads(json_text.dumps(bundle))).model_dump_xml(),
         max(3, args.runs // 5)),
        ("XML read (fhir.resources model_validate_xml)",
         lambda: Bundle.model_validate_xml(model_xml), max(3, args.runs // 5)),
    ]
    table = Table(title=f"a searchset Bundle of {len(bundle['entry'])} Observations, "
                        f"{len(as_xml) // 1024} KiB as XML: CPU ms per Bundle")
    for col in ("way", "runs", "median", "p90"):
        table.add_column(col, justify="left" if col == "way" else "right")
    for label, fn, runs in ways:
        times = sorted(cpu_ms(fn, runs, label))
        table.add_row(label, str(runs), f"{statistics.median(times):.1f}",
                      f"{times[int(0.9 * (len(times) - 1))]:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
