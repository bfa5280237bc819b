"""Wall time of the toy chain, per notebook.

    python benchmarks/bench_chain.py                  # read runs/toy/timings.json
    python benchmarks/bench_chain.py --run            # run the chain first (into --run-dir)
    python benchmarks/bench_chain.py --run --run-dir /tmp/bench --set 00_prepare.toy_train=600

Timings on a shared 2-core machine are noisy; report the machine with the numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from morelib.config import resolve_run_dir  # noqa: E402
from morelib.provenance import hardware  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="toy")
    parser.add_argument("--run-dir", default=None, help="default: the profile's run_dir")
    parser.add_argument("--run", action="store_true", help="run the chain before reporting")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    if args.run:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from morelib.run import run_chain

        started = time.perf_counter()
        run_chain(args.profile, run_dir=args.run_dir, overrides=args.overrides)
        print(f"chain wall time including kernel start-ups: {time.perf_counter() - started:.1f} s")

    from morelib.config import load_profile

    from morelib.files import read_json
    from morelib.layout import RunLayout

    run_dir = resolve_run_dir(args.run_dir) if args.run_dir else load_profile(args.profile).run_dir
    path = RunLayout(run_dir).timings
    if not path.is_file():
        print(f"no {path}; run the chain first (--run)", file=sys.stderr)
        return 1
    timings = read_json(path)
    machine = hardware()
    print(f"profile {timings['profile']}, {path}")
    print(f"machine: {machine['cpu_count']} CPUs, {machine['ram_gb']} GB RAM, GPUs: {machine['gpus'] or 'none'}")
    print(f"{'notebook':<20} {'seconds':>9}  status")
    for stem, item in timings["notebooks"].items():
        print(f"{stem:<20} {item['seconds']:>9.1f}  {item['status']}")
    print(f"{'total':<20} {timings['total_seconds']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
