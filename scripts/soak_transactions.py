"""Kill `fhirserver serve` (its whole process group, SIGKILL) at many points of a
300-entry transaction Bundle, restart it each time, and check that its first answer
and the database show all of the transaction or none of it (FHIR R4
http.html#transaction: "either all succeed or all fail").

Kill points: after a random number (0 to 299) of the transaction's Observations are
stored, so the kills land before, between and after FerretDB's insert batches and
in the last steps of the commit. One line per round: what was stored at the kill,
the outcome, and the seconds from restart to the server's first answer.

    PYTHONPATH=. .venv/bin/python scripts/soak_transactions.py --rounds 30

Exit status 1 when any round shows part of a transaction.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.storage.crash_harness import OBSERVATIONS, Server, crash_once, kill_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="kills to make [20]")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the kill points")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="embedded data directory [a fresh temporary one]")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers [2]")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="soak-")) / "data"
    server = Server(data_dir, workers=args.workers)
    print(f"data in {data_dir}, server log {server.log}", flush=True)
    server.start()
    failures, seconds = 0, []
    try:
        server.wait_up()
        for n in range(1, args.rounds + 1):
            threshold = rng.randint(0, OBSERVATIONS)
            crash = crash_once(server, kill_at(threshold))
            seconds.append(crash.restart_seconds)
            ok = crash.whole
            failures += not ok
            print(f"[{n:3}/{args.rounds}] kill at >= {threshold:3} Observations: stored at kill "
                  f"P={crash.at_kill.get('Patient', 0)} O={crash.at_kill.get('Observation', 0):3} "
                  f"pending={crash.at_kill.get('pending', 0)} answered={crash.answered} -> "
                  f"{crash.outcome:5} {'ok' if ok else 'FAIL'}  first answer "
                  f"{crash.restart_seconds:5.1f} s after restart", flush=True)
    finally:
        server.stop()
    if seconds:
        print(f"restart to first answer: min {min(seconds):.1f} s, median "
              f"{statistics.median(seconds):.1f} s, max {max(seconds):.1f} s")
    print(f"{failures} of {len(seconds)} rounds showed part of a transaction")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
