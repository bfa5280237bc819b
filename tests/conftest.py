"""Shared test set-up: one thread per library (the CI machine has 2 shared cores), the package on
the path, and one toy world per test session.

``toy_world`` is a small toy dataset in the MORE layout and a tiny random Qwen2.5-VL, built once
for the whole session; tests that train or write files get a fresh run directory from it::

    def test_x(toy_world):
        run_dir = toy_world.run_dir("x", models=["stage1"])   # checkpoints/stage1 = the tiny model
        samples = toy_world.samples("train")
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
    os.environ.setdefault(variable, "false" if variable == "TOKENIZERS_PARALLELISM" else "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The toy world's sizes: enough facts for every split a test reads, small enough to build in seconds.
TOY_SEED = 2
TOY_SIZES = {"train": 80, "valid": 10, "test": 60}
# About 150k parameters: a training step takes well under a second on one core.
TINY_SIZES = {"hidden_size": 64, "intermediate_size": 128, "vocab_size": 1024}


@dataclass
class ToyWorld:
    """Toy data and a tiny model shared by the session (treat both as read-only)."""

    data_dir: Path
    model_dir: Path
    _factory: pytest.TempPathFactory

    def run_dir(self, name: str = "run", models: tuple[str, ...] | list[str] = ()) -> Path:
        """A fresh, empty run directory; each name in ``models`` gets a copy of the tiny model at
        ``checkpoints/<name>`` (a copy: training may write next to it)."""
        from morelib.layout import RunLayout

        run_dir = self._factory.mktemp(name)
        for model in models:
            shutil.copytree(self.model_dir, RunLayout(run_dir).checkpoint(model))
        return run_dir

    def samples(self, split: str = "train") -> list:
        from morelib.data import load_split

        return load_split(self.data_dir, split)


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory) -> ToyWorld:
    from morelib import toy
    from morelib.tiny import TinySettings, build_tiny_model

    root = tmp_path_factory.mktemp("toy_world")
    data_dir = toy.generate(root / "data", toy.ToyConfig(seed=TOY_SEED, **TOY_SIZES))
    model_dir = build_tiny_model(root / "model", data_dir, seed=0, settings=TinySettings(**TINY_SIZES))
    return ToyWorld(data_dir=data_dir, model_dir=model_dir, _factory=tmp_path_factory)


# Two facts of the toy's metadata, as the offline expert server reads them (toy_meta.jsonl rows):
# the object is the relation's subject, or a bystander. The server ignores fields it does not know.
EXPERT_SUBJECT = {"id": "train-1", "entity": "Lena Ortiz", "entity_type": "org", "cue_words": "now leads",
                  "object": {"type": "per", "colour": "red", "shape": "circle", "style": "solid",
                             "position": "top left"},
                  "object_is_subject": True, "subject_noun": "senator", "label": "/per/org/leader_of",
                  "a_field_the_expert_does_not_know": [1, 2, 3]}
EXPERT_BYSTANDER = {"id": "train-2", "entity": "Lena Ortiz", "entity_type": "org", "cue_words": "now leads",
                    "object": {"type": "loc", "colour": "green", "shape": "triangle", "style": "hollow"},
                    "object_is_subject": False, "subject_noun": "senator", "label": "none"}


@pytest.fixture
def toy_meta(tmp_path) -> Path:
    """A ``toy_meta.jsonl`` holding ``EXPERT_SUBJECT`` and ``EXPERT_BYSTANDER`` (the offline expert's input)."""
    import json

    path = tmp_path / "toy_meta.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in (EXPERT_SUBJECT, EXPERT_BYSTANDER)))
    return path


def pytest_configure(config):
    config.addinivalue_line("markers", "chain: runs notebooks of the real chain through papermill (slow)")


def pytest_collection_modifyitems(config, items):
    """The chain test first. `make test` runs two workers (``-n 2 --dist worksteal``): one starts
    the chain, the longest test by far, while the other works through the rest and steals half of
    what waits behind the chain whenever it runs dry. Serial runs only change order."""
    chain = [item for item in items if item.get_closest_marker("chain")]
    items[:] = chain + [item for item in items if item not in chain]
