"""The run directory: one object names every file the notebooks hand to each other.

Notebooks talk to each other only through files in the run directory (``runs/<name>/``), so
any notebook can run alone once the files it reads exist. ``RunLayout(run_dir)`` is the only
place that spells those paths; every module and notebook asks it.

=============================================  ===========  ============  ==================================
path                                           written by   read by       what it holds
=============================================  ===========  ============  ==================================
``run_info.json``                              run          people        resolved config, versions, hardware, git commit
``timings.json``                               run          benchmarks    wall time per notebook
``logs/run.log``, ``logs/<stage>.log``         run, 03, 05  people        the runner's log; trainer and progress output
``notebooks/NN_name.ipynb``                    run          people        executed copies of the notebooks
``data/`` (toy only)                           00           all           toy data in the MORE layout (paper: ``data_dir``)
``data/toy_meta.jsonl`` (toy only)             00           01, 06, 07    the facts behind each toy sample
``models/base/`` (toy only)                    00           01, 03        the tiny random Qwen2.5-VL
``trace.json``                                 00           01-07         the sample every notebook follows
``annotation/split_ids.json``                  01           02-04         ``{"stage1": [...], "stage2_pool": [...]}``
``annotation/responses.jsonl``                 01           02            the expert store (append-only, resumable)
``annotation/report.json``                     01           people        counts, cost, failures of the annotation run
``sft/stage1.jsonl``                           02           03            ``{"id", "label", "completion"}``, the Stage 1 set
``checkpoints/<model>/``                       03, 05       04-07         final model; ``ckpt/`` resumable checkpoints
``checkpoints/<model>/done.json``              03, 05       03-06         training summary, written last: present = finished
``predictions/<model>__<split>.jsonl``         04, 06       04, 06, 07    ``{"id", "gold", "text", "label", ...}``
``difficulty/split.jsonl``                     04           05            ``{"id", "label", "pred", "difficulty"}``
``grpo/<variant>[_seed<N>]/``                  05           05, 06        ``plan.csv``, ``mix.json``, ``log.jsonl``, ``train.log``
``experiments/<name>/result.json``             benchmark    05            Stage 2 settings tried on valid (``benchmarks/stage2_valid.py``)
``metrics/*.csv``                              06, 07       people        scores, paired gains, faithfulness
``figures/*``                                  05-07        people        Table 1, Figures 3 and 4 (``make figures`` copies them to ``figures/``)
=============================================  ===========  ============  ==================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def repo_root() -> Path:
    """The repository root: the parent of the ``morelib`` package."""
    return Path(__file__).resolve().parent.parent


def resolve_path(path: str | os.PathLike) -> Path:
    """An absolute path; a relative one is taken relative to the repository root, never the cwd."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (repo_root() / path).resolve()


@dataclass(frozen=True)
class RunLayout:
    """Every file of one run directory (see the module's table)."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", resolve_path(root))

    # --- the runner's own files ---
    @property
    def run_info(self) -> Path:
        return self.root / "run_info.json"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run_log(self) -> Path:
        return self.logs / "run.log"

    def log(self, name: str) -> Path:
        """``logs/<name>.log``: where a stage's trainer and progress output goes."""
        return self.logs / f"{name}.log"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    # --- 00: toy world and tiny model ---
    @property
    def toy_data(self) -> Path:
        return self.root / "data"

    @property
    def toy_base_model(self) -> Path:
        return self.root / "models" / "base"

    @property
    def trace(self) -> Path:
        return self.root / "trace.json"

    # --- 01, 02: Stage 1 data ---
    @property
    def annotation(self) -> Path:
        return self.root / "annotation"

    @property
    def split_ids(self) -> Path:
        return self.annotation / "split_ids.json"

    @property
    def expert_store(self) -> Path:
        return self.annotation / "responses.jsonl"

    @property
    def annotation_report(self) -> Path:
        return self.annotation / "report.json"

    @property
    def batch_inputs(self) -> Path:
        return self.annotation / "batch"

    @property
    def stage1_set(self) -> Path:
        return self.root / "sft" / "stage1.jsonl"

    # --- 03-05: models ---
    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>``: ``stage1``, ``sft_label_full``, ``sft_label_25``, ``grpo_<variant>``,
        ``grpo_<variant>_seed<N>`` (an extra training seed), ..."""
        return self.root / "checkpoints" / name

    def predictions(self, model: str, split: str) -> Path:
        return self.root / "predictions" / f"{model}__{split}.jsonl"

    @property
    def difficulty_split(self) -> Path:
        return self.root / "difficulty" / "split.jsonl"

    def grpo_dir(self, variant: str) -> Path:
        """``grpo/<variant>``: the mix plan, the saved mix, the step log and the training log."""
        return self.root / "grpo" / variant

    def experiment(self, name: str) -> Path:
        """``experiments/<name>/``: a Stage 2 settings experiment scored on valid (``benchmarks/stage2_valid.py``).

        A run directory of its own (links to this run's data, models and Stage 1 model), with
        ``result.json`` written last.
        """
        return self.root / "experiments" / name

    # --- 06, 07: results ---
    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def model_done(self, name: str) -> Path:
        """``checkpoints/<name>/done.json``: written last by training, so its presence means finished."""
        return self.checkpoint(name) / "done.json"
