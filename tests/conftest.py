"""Shared test set-up: one thread per library (the CI machine has 2 shared cores) and the
notebook builder on the path."""

import os
import sys
from pathlib import Path

for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
    os.environ.setdefault(variable, "false" if variable == "TOKENIZERS_PARALLELISM" else "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tools" / "notebooks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def pytest_configure(config):
    config.addinivalue_line("markers", "chain: runs notebooks of the real chain through papermill (slow)")
