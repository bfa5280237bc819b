"""The run directory: one object names every file the notebooks hand to each other.

Notebooks talk to each other only through files in the run directory (``runs/<name>/``), so
any notebook can run alone once the files it reads exist. ``RunLayout(run_dir)`` is the only
place that spells those paths; every module and notebook asks it.

=============================================  ===========  ============  ==================================
path                                           written by   read by       what it holds
=============================================  ===========  ============  ==================================
``run_info.json``                              run          people        resolved config, versions, hardware, git commit
``timings.json``                               run          benchmarks    wall time per notebook
``logs/run.log``, ``logs/<stage>.log``         run, 00      people        the runner's log; a stage's own log (``pretrain``)
``notebooks/NN_name.ipynb``                    run          people        executed copies of the notebooks
``data/`` (toy only)                           00           all           toy data in the MORE layout (paper: ``data_dir``)
``data/toy_meta.jsonl`` (toy only)             00           01, 06, 07    the facts behind each toy sample (``morelib.toy``)
``data/toy_config.json`` (toy only)            00           00            the generator's settings (a rerun checks them)
``models/base/`` (toy only)                    00           01, 03        the tiny Qwen2.5-VL, pretrained
``trace.json``                                 00           01-07         the sample every notebook follows
``annotation/split_ids.json``                  01           02-04         ``{"stage1": [...], "stage2_pool": [...]}``
``annotation/responses.jsonl``                 01           02            the expert store (append-only, resumable)
``annotation/report.json``                     01           people        counts, cost, failures of the annotation run
``sft/stage1.jsonl``                           02           03            ``{"id", "label", "completion"}``, the Stage 1 set
``sft/stage1_rejected.jsonl``                  02           people        the expert replies the filter rejected, with the reason
``checkpoints/<model>/``                       03, 05       04-07         one trained model (:class:`ModelFolder`)
``checkpoints/<model>/settings.json``          03, 05       child         what the training process was given
``checkpoints/<model>/train.log``              03, 05       people        the training process's whole output
``checkpoints/<model>/ckpt/``                  child        child         resumable trainer checkpoints
``checkpoints/<model>/log.jsonl``              child        03, 05        the trainer's log history
``checkpoints/<model>/done.json``              child        03-06         training summary, written last: present = finished
``predictions/<model>__<split>.jsonl``         04, 06       04-07         ``{"id", "gold", "text", "label", ...}``
``difficulty/split.jsonl``                     04           05            ``{"id", "label", "pred", "difficulty"}``
``grpo/<variant>[_seed<N>]/``                  05           05, 06        one GRPO run's files (:class:`GrpoRunFolder`)
``grpo/<variant>/mix.json``                    05, child    05, child     the per-epoch mixes, built once (resume reuses them)
``grpo/<variant>/plan.csv``                    05, child    people        easy and hard samples and end step of each mix epoch
``grpo/<variant>/log.jsonl``                   child        05, 06        one row per optimizer step (rewards, KL, memory)
``experiments/<name>/``                        benchmark    05            a Stage 2 settings experiment, a run directory itself
``experiments/<name>/result.json``             benchmark    05            its valid scores, written last
``experiments/stage1_seeds.csv``               benchmark    people        Stage 1 trained with several seeds (or ``<name>.csv``)
``metrics/*.csv``                              05-07        people        scores, paired gains, faithfulness
``figures/*``                                  03-07        people        Table 1, Figures 3 and 4 (``make figures`` copies them to ``figures/``)
=============================================  ===========  ============  ==================================

"child" is the training process a notebook launches (``morelib.launch``). Each file handed from
one step to another has one writer and one reader, named beside its path below. The files under
``metrics/`` and ``figures/`` are for people: ``morelib.report`` and notebooks 05 to 07 name them
where they write them, and no notebook reads them back.
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


# The tables a run writes for people into figures/ (and that `make figures` copies into the
# repository's figures/): one name each, here, so the notebook that writes a table and the runner
# that copies it agree. Table 1 is written as .md, .csv and .tex.
TABLE1_STEM = "table1"
PAIRED_F1 = "paired_f1.csv"
FIGURE3_GAINS = "figure3_gains.csv"
FIGURE3_SEEDS = "figure3_seeds.csv"
FAITHFULNESS = "faithfulness.csv"

@dataclass(frozen=True)
class ModelFolder:
    """``checkpoints/<model>/``: one trained model, the files of its training run around it.

    The notebook writes ``settings`` and launches the training process (``morelib.launch``), whose
    whole output goes to ``train_log``; the process (``morelib.training.train_to_done``) keeps its
    resumable ``checkpoints`` here, saves the final model into the folder, then writes the trainer's
    ``log`` and, last, ``done``.
    """

    root: Path
    # The file names, for code that holds a model folder as a plain path.
    SETTINGS, TRAIN_LOG, CHECKPOINTS, LOG, DONE = "settings.json", "train.log", "ckpt", "log.jsonl", "done.json"

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def settings(self) -> Path:
        """Written by ``morelib.launch.write_settings``, read by ``morelib.launch.read_settings``."""
        return self.root / self.SETTINGS

    @property
    def train_log(self) -> Path:
        """Appended to by ``morelib.launch.launch``; for people."""
        return self.root / self.TRAIN_LOG

    @property
    def checkpoints(self) -> Path:
        """The trainer's ``output_dir`` (``checkpoint-N`` folders), set in ``morelib.settings``."""
        return self.root / self.CHECKPOINTS

    @property
    def log(self) -> Path:
        """The trainer's log history: written by ``training.train_to_done``, read by ``training.read_log``."""
        return self.root / self.LOG

    @property
    def done(self) -> Path:
        """The summary, written last by ``training.train_to_done``, read by ``training.read_summary``."""
        return self.root / self.DONE

    @property
    def finished(self) -> bool:
        """Whether training finished: ``done`` is written last, so its presence means complete."""
        return self.done.exists()


@dataclass(frozen=True)
class GrpoRunFolder:
    """``grpo/<variant>[_seed<N>]/``: the files of one GRPO run besides its model (``morelib.grpo``)."""

    root: Path
    MIX, PLAN, STEP_LOG = "mix.json", "plan.csv", "log.jsonl"

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def mix(self) -> Path:
        """The per-epoch mixes: written and read by ``mixing.load_or_build_mix`` (a resumed run reuses them)."""
        return self.root / self.MIX

    @property
    def plan(self) -> Path:
        """The mix plan (``mixing.plan_table``), written by ``grpo.prepare_mix``; for people."""
        return self.root / self.PLAN

    @property
    def step_log(self) -> Path:
        """One row per optimizer step: appended by ``grpo.step_logger``, read by ``training_logs.grpo_log``."""
        return self.root / self.STEP_LOG


@dataclass(frozen=True)
class RunLayout:
    """Every file of one run directory (see the module's table)."""

    root: Path

    def __init__(self, root: "str | os.PathLike | RunLayout"):
        # A stage takes the notebook's RunLayout; a path (a command line's --run-dir) is made one here.
        object.__setattr__(self, "root", root.root if isinstance(root, RunLayout) else resolve_path(root))

    # --- the runner's own files ---
    @property
    def run_info(self) -> Path:
        """Written by ``config.write_run_info``; for people."""
        return self.root / "run_info.json"

    @property
    def timings(self) -> Path:
        """Written and read (merged) by ``run._update_timings``, read by ``benchmarks/bench_chain.py``."""
        return self.root / "timings.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run_log(self) -> Path:
        return self.logs / "run.log"

    def log(self, name: str) -> Path:
        """``logs/<name>.log``: a stage's own output outside a model folder (notebook 00: ``pretrain``)."""
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
        """Written by ``trace.write`` (notebook 00), read by ``trace.load``."""
        return self.root / "trace.json"

    # --- 01, 02: Stage 1 data ---
    @property
    def annotation(self) -> Path:
        return self.root / "annotation"

    @property
    def split_ids(self) -> Path:
        """Written by ``splits.write_split_ids``, read by ``splits.read_split_ids``."""
        return self.annotation / "split_ids.json"

    @property
    def expert_store(self) -> Path:
        """``expert_store.ResponseStore.for_run``: appended to by notebook 01, read by 02."""
        return self.annotation / "responses.jsonl"

    @property
    def annotation_report(self) -> Path:
        """Written by ``annotate.save_report``; for people."""
        return self.annotation / "report.json"

    @property
    def batch_inputs(self) -> Path:
        return self.annotation / "batch"

    @property
    def stage1_set(self) -> Path:
        """Written by ``filtering.build_stage1``, read by ``filtering.read_stage1``."""
        return self.root / "sft" / "stage1.jsonl"

    @property
    def stage1_rejected(self) -> Path:
        """Written by ``filtering.build_stage1`` beside the Stage 1 set; for people."""
        return self.stage1_set.with_name("stage1_rejected.jsonl")

    # --- 03-05: models ---
    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>``: ``stage1``, ``sft_label_full``, ``sft_label_25``, ``grpo_<variant>``,
        ``grpo_<variant>_seed<N>`` (an extra training seed), ..."""
        return self.root / "checkpoints" / name

    def model(self, name: str) -> ModelFolder:
        """The files of the model ``checkpoints/<name>`` (:class:`ModelFolder`)."""
        return ModelFolder(self.checkpoint(name))

    def model_done(self, name: str) -> Path:
        """``checkpoints/<name>/done.json``: written last by training, so its presence means finished."""
        return self.model(name).done

    def predictions(self, model: str, split: str) -> Path:
        """Appended to by ``inference.predict_to_file`` (resumable), read by ``inference.read_predictions``."""
        return self.root / "predictions" / f"{model}__{split}.jsonl"

    @property
    def difficulty_split(self) -> Path:
        """Written by ``difficulty.write_split``, read by ``difficulty.read_split``."""
        return self.root / "difficulty" / "split.jsonl"

    def grpo_dir(self, variant: str) -> Path:
        """``grpo/<variant>``: the folder of :meth:`grpo_run`."""
        return self.root / "grpo" / variant

    def grpo_run(self, variant: str) -> GrpoRunFolder:
        """The files of one GRPO run besides its model: mix, plan, step log (:class:`GrpoRunFolder`)."""
        return GrpoRunFolder(self.grpo_dir(variant))

    @property
    def experiments(self) -> Path:
        """``experiments/``: one folder per Stage 2 settings experiment (``training_logs.stage2_experiments`` reads them)."""
        return self.root / "experiments"

    def experiment(self, name: str) -> Path:
        """``experiments/<name>/``: a Stage 2 settings experiment scored on valid (``benchmarks/stage2_valid.py``).

        A run directory of its own (links to this run's data, models and Stage 1 model), with
        ``result.json`` (:attr:`result`) written last.
        """
        return self.experiments / name

    @property
    def result(self) -> Path:
        """``result.json`` of a run directory that is an experiment: written last by the benchmark that
        ran it (``benchmarks/stage2_valid.py``, ``self_training_valid.py``), read by ``training_logs.stage2_experiments``."""
        return self.root / "result.json"

    def stage1_seeds(self, name: str = "stage1") -> Path:
        """``experiments/stage1_seeds.csv`` (``<name>.csv`` for Stage 1 settings tried under another
        name): written by ``benchmarks/stage1_seeds.py``; for people."""
        return self.experiments / ("stage1_seeds.csv" if name == "stage1" else f"{name}.csv")

    # --- 06, 07: results ---
    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def scores(self, split: str) -> Path:
        """``metrics/scores_<split>.csv``: Acc / P / R / F1 per model, written by notebook 06; for people."""
        return self.metrics / f"scores_{split}.csv"

    def per_label(self, split: str, model_name: str) -> Path:
        """``metrics/per_label_<split>__<model>.csv``: one model's per-label F1, written by notebook 06; for people."""
        return self.metrics / f"per_label_{split}__{model_name.replace(' ', '_')}.csv"

    @property
    def grpo_summary(self) -> Path:
        """``metrics/grpo_summary.csv``: the learning signal per Stage 2 variant, written by notebook 05; for people."""
        return self.metrics / "grpo_summary.csv"
