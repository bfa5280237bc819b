"""How long `make test` takes on a fresh clone, as CI runs it (set-up included).

    python benchmarks/suite_time.py [--runs 3] [--commit HEAD] [--slowest 10]

Each run clones the committed tree into a new temporary folder, times `make setup` (the venv,
pip, the kernel) and then `make test` (pytest with its two workers), and prints one line per run
with the load average before it, then the slowest tests of the last run. Nothing of this
checkout is used but its git history, so uncommitted changes are not measured. The suite's goal
is 300 s or less on the 2-core CPU machine; a run on a loaded machine is not a measurement of it,
so the load average is part of every line.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str], cwd: Path, log: Path, env: dict[str, str]) -> tuple[float, int]:
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    return time.monotonic() - started, code


def slowest(log: Path, n: int) -> list[str]:
    """The ``--durations`` lines pytest printed, slowest first."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()
             if re.match(r"\s*\d+\.\d+s (call|setup|teardown) ", line)]
    return lines[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--slowest", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the clones and their logs")
    args = parser.parse_args(argv)

    commit = subprocess.run(["git", "rev-parse", args.commit], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    env = {**os.environ, "PYTEST_ADDOPTS": f"--durations={args.slowest}"}
    print(f"commit {commit[:7]}, {os.cpu_count()} cores", flush=True)
    failed = 0
    for run in range(1, args.runs + 1):
        root = Path(tempfile.mkdtemp(prefix="suite-time-"))
        clone = root / "repo"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "checkout", "--quiet", commit], cwd=clone, check=True)
        load = os.getloadavg()[0]
        logs = {name: root / f"{name}.log" for name in ("setup", "test")}  # make's targets, one log each
        setup_s, setup_code = timed(["make", "setup"], clone, logs["setup"], env)
        test_s, test_code = timed(["make", "test"], clone, logs["test"], env)
        tail = logs["test"].read_text(errors="replace").strip().splitlines()[-1:]
        print(f"run {run}: set-up {setup_s:.0f} s (rc {setup_code}), test {test_s:.0f} s (rc {test_code}), "
              f"total {setup_s + test_s:.0f} s; load average before {load:.2f}; {' '.join(tail)}", flush=True)
        failed += bool(setup_code or test_code)
        keep = args.keep or bool(setup_code or test_code)  # a failed run's clone stays, to be read
        if test_code:
            print("\n".join("  " + line for line in logs["test"].read_text(errors="replace").splitlines()
                             if line.startswith(("FAILED", "ERROR"))), flush=True)
        if run == args.runs:
            print(f"slowest {args.slowest} of run {run}:")
            for line in slowest(logs["test"], args.slowest):
                print("  " + line)
        if keep:
            print(f"  kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
