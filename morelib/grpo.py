"""Stage 2: GRPO with Progressive Sample-Mixing (TRL's GRPOTrainer), run under accelerate.

    accelerate launch -m morelib.grpo --settings settings.json     (see morelib.launch)

The policy and the reference model both start from the Stage 1 model (``model_path``): with
``beta > 0`` TRL loads a second, frozen copy from the same path for the KL term. The vision
encoder and projector stay frozen (``morelib.model.load_model``); the LLM is trained.

The data mix (method-facts, approach (a)): every epoch's mix (all hard samples plus the
variant's share of easy ones, ``morelib.mixing``) is built before training, the epochs are
concatenated and trained in one pass with ``shuffle_dataset=False``, so there is one optimizer,
one learning-rate schedule and ordinary checkpoints. The mix is seeded and saved to
``run_dir/grpo/<variant>/mix.json`` before training; a rerun reads it back, so a resumed run
continues through exactly the same rows.

Rows are ``prompt`` (the student prompt with two image placeholders), ``images`` ([full image,
object crop], loaded on access with ``set_transform``) and ``label`` (gold), which TRL passes to
the reward functions as a keyword.

Files: ``run_dir/grpo/<variant>/plan.csv`` (per-epoch counts), ``mix.json``, ``log.jsonl`` (one
row per optimizer step: each reward's mean, KL, completion length, the share of groups whose
rewards are all equal, ...); checkpoints in ``output_dir/ckpt``; the final model and processor
in ``output_dir`` (``run_dir/checkpoints/grpo_<variant>``), finished when ``grpo_done.json``
exists.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from morelib.checkpoints import last_checkpoint, peak_rss_mb

DONE_FILE = "grpo_done.json"  # written last: its presence means the final model is complete
CKPT_DIR = "ckpt"
LOG_FILE = "log.jsonl"
PLAN_FILE = "plan.csv"
MIX_FILE = "mix.json"
# Settings that decide the mix; a saved mix built with other values is refused, not reused.
MIX_KEYS = ("variant", "epochs", "gamma", "none_ratio", "seed", "max_hard_samples", "max_easy_samples")


@dataclass
class GRPOSettings:
    """Everything one Stage 2 run needs. Relative paths are taken from the repository root."""

    run_dir: str
    """Run directory: the difficulty split is read from it, the plan, mix and log are written to it."""
    data_dir: str
    """MORE-layout data directory (the Stage 2 pool are training-split samples)."""
    model_path: str | None = None
    """Stage 1 model, also the reference model of the KL term; None = ``run_dir/checkpoints/stage1``."""
    split_file: str | None = None
    """Easy/hard split rows ``{"id", "label", "pred", "difficulty"}``; None = ``run_dir/difficulty/split.jsonl``."""
    output_dir: str | None = None
    """Final model directory; None = ``run_dir/checkpoints/grpo_<variant>``."""

    # --- the data mix (morelib.mixing) ---
    variant: str = "progressive"
    """``progressive`` (MORE-R1), ``raw`` (whole pool each epoch), ``balanced`` (1:1 each epoch), ``hard_only``."""
    epochs: int = 4
    """Epochs of the mix (paper: 4)."""
    gamma: float = 0.5
    """Decay of the easy share per epoch, progressive only (paper: 0.5; the exact formula is inferred)."""
    none_ratio: float | None = None
    """Share of ``none`` among the drawn easy samples; None = the training split's none proportion (paper)."""
    max_hard_samples: int | None = None
    """Use a seeded subset of at most this many hard samples; None = all (paper). For small toy runs."""
    max_easy_samples: int | None = None
    """Use a seeded subset of at most this many easy samples as the pool; None = all (paper)."""

    # --- rewards (morelib.rewards) ---
    reward_names: list[str] = field(default_factory=lambda: ["format", "length", "answer"])
    """Reward functions by name, summed with ``reward_weights``."""
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Weight of each reward (paper: a plain sum is inferred)."""
    length_threshold: int = 1024
    """Length reward pays outputs longer than this many characters (paper: 1,024)."""
    length_requires_format: bool = False
    """Guard (not in the paper): pay the length reward only to well-formed outputs."""
    answer_requires_format: bool = False
    """Guard (not in the paper): pay the answer reward only to well-formed outputs."""

    # --- GRPO (TRL GRPOConfig; TRL's defaults differ from the paper's, so all are explicit) ---
    loss_type: str = "grpo"
    """Loss normalisation: ``grpo`` = DeepSeekMath's per-sequence mean (TRL defaults to ``dapo``)."""
    beta: float = 0.001
    """KL coefficient against the reference (Stage 1) model (paper: 0.001)."""
    epsilon: float = 0.2
    """PPO clip range of the probability ratio (paper: 0.2)."""
    num_iterations: int = 2
    """Policy updates per generation batch, mu (paper: 2, read as TRL's num_iterations)."""
    num_generations: int = 8
    """Group size G: completions sampled per prompt (not stated; inferred 8, ms-swift's default)."""
    scale_rewards: str = "group"
    """Advantage scaling: ``group`` = divide by the group's std, as in DeepSeekMath's GRPO."""
    use_bias_correction_kl: bool = False
    """TRL's importance-weighted KL (DeepSeek-V3.2); off = DeepSeekMath's plain k3 KL, as in the paper."""
    mask_truncated_completions: bool = False
    """Exclude completions cut at max_completion_length from the loss (not in the paper)."""
    temperature: float = 0.8
    """Sampling temperature of the rollouts (paper: 0.8)."""
    top_p: float = 0.9
    """Nucleus sampling (not stated; inferred 0.9, ms-swift's default)."""
    top_k: int = 50
    """Top-k sampling, 0 = off (not stated; inferred 50, ms-swift's default)."""
    max_completion_length: int = 1024
    """Longest rollout in tokens (paper: 1,024)."""

    # --- optimisation ---
    learning_rate: float = 1e-6
    """Peak learning rate (paper: 1e-6)."""
    per_device_batch_size: int = 16
    """Completions per device per step, TRL's meaning (paper: 16); a multiple of num_generations across devices."""
    gradient_accumulation_steps: int = 1
    """Steps accumulated per optimizer update (paper: 1)."""
    warmup_ratio: float = 0.05
    """Share of the updates spent warming the learning rate up (paper: 0.05)."""
    lr_scheduler_type: str = "cosine"
    """Decay after warm-up (not stated; inferred cosine, ms-swift's default)."""
    weight_decay: float = 0.0
    """AdamW weight decay (not stated)."""
    max_grad_norm: float = 1.0
    """Gradient clipping (not stated; 1.0 is TRL's and ms-swift's default)."""
    bf16: bool = False
    """bfloat16 weights and compute (paper: on; slower on CPU, so off for the toy). Run it with DeepSpeed
    (fp32 master weights): plain bf16 weights round most AdamW updates at lr 1e-6 away."""
    model_dtype: str | None = None
    """Weights dtype of policy and reference: None = bfloat16 with ``bf16``, else float32. ``"float32"`` with
    ``bf16=True`` keeps fp32 weights under bf16 autocast, for runs without DeepSpeed."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (TRL's default is on; slower; useful for 7B)."""

    # --- rollouts ---
    use_vllm: bool = False
    """Generate rollouts with vLLM (paper profile, GPU only); False = transformers generation."""
    vllm_mode: str = "colocate"
    """``colocate`` (vLLM inside the training processes) or ``server`` (a separate ``trl vllm-serve``)."""
    vllm_gpu_memory_utilization: float = 0.3
    """GPU memory share vLLM may take in colocate mode."""
    vllm_server_base_url: str | None = None
    """Server mode: URL of ``trl vllm-serve`` (None = TRL's default host and port)."""
    vllm_importance_sampling_correction: bool = False
    """Correct for vLLM/trainer log-prob mismatch (TRL's default on; not in the paper's framework)."""

    # --- bookkeeping ---
    seed: int = 0
    """Seed of the mix, the sampling and any random initialisation."""
    logging_steps: int = 1
    """Optimizer updates between two log rows (1 = every step)."""
    save_steps: int = 200
    """Updates between checkpoints in ``output_dir/ckpt`` (a rerun resumes from the last one)."""
    save_total_limit: int | None = 1
    """Checkpoints kept (a 7B checkpoint with optimizer state is large)."""
    max_steps: int = -1
    """Stop after this many updates (> 0; for quick checks); -1 = the whole mix."""
    log_completions: bool = False
    """Print a sample of prompts and completions at each log step (TRL)."""
    template_path: str | None = None
    """Student prompt template; None = the package's basic task description."""
    report_to: list[str] = field(default_factory=list)
    """Trackers (``["wandb"]``, ``["tensorboard"]``); empty = none."""

    def __post_init__(self):
        from morelib.mixing import VARIANTS

        if self.variant not in VARIANTS:
            raise ValueError(f"GRPOSettings.variant: {self.variant!r} is not one of {tuple(VARIANTS)}")
        if len(self.reward_weights) != len(self.reward_names):
            raise ValueError(f"GRPOSettings.reward_weights: {len(self.reward_weights)} weights for "
                             f"{len(self.reward_names)} rewards {self.reward_names}")
        if self.vllm_mode not in ("colocate", "server"):
            raise ValueError(f"GRPOSettings.vllm_mode: {self.vllm_mode!r} is not 'colocate' or 'server'")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"GRPOSettings.warmup_ratio: {self.warmup_ratio} is not in [0, 1)")

    @classmethod
    def from_json(cls, path: str | Path) -> "GRPOSettings":
        """Read settings written by ``morelib.launch.write_settings`` (errors name file and field)."""
        from morelib.launch import read_settings

        return read_settings(cls, path)

    # Derived paths, all absolute.
    @property
    def run_path(self) -> Path:
        from morelib.config import resolve_run_dir

        return resolve_run_dir(self.run_dir)

    @property
    def work_dir(self) -> Path:
        """``run_dir/grpo/<variant>``: plan, mix and log."""
        return self.run_path / "grpo" / self.variant

    @property
    def model_dir(self) -> Path:
        from morelib.config import resolve_path

        return resolve_path(self.model_path) if self.model_path else self.run_path / "checkpoints" / "stage1"

    @property
    def split_path(self) -> Path:
        from morelib.config import resolve_path

        return resolve_path(self.split_file) if self.split_file else self.run_path / "difficulty" / "split.jsonl"

    @property
    def out_dir(self) -> Path:
        from morelib.config import resolve_path

        return resolve_path(self.output_dir) if self.output_dir else self.run_path / "checkpoints" / f"grpo_{self.variant}"


# ----------------------------------------------------------------------------- the mix


def read_difficulty_split(path: str | Path) -> tuple[list[str], list[str], dict[str, str]]:
    """(hard ids, easy ids, gold label by id) from notebook 04's ``split.jsonl``, in file order."""
    from morelib.difficulty import read_split

    rows = read_split(path)
    hard = [r["id"] for r in rows if r["difficulty"] == "hard"]
    easy = [r["id"] for r in rows if r["difficulty"] == "easy"]
    if not hard:
        raise ValueError(f"{path}: no hard samples; every variant trains on the hard ones")
    return hard, easy, {r["id"]: r["label"] for r in rows}


def train_none_ratio(samples) -> float:
    """Share of ``none`` among the training samples (the proportion easy draws keep)."""
    from morelib.labels import NONE

    samples = list(samples)
    if not samples:
        raise ValueError("no training samples to take the none proportion from")
    return sum(s.label == NONE for s in samples) / len(samples)


def _subset(ids: list[str], limit: int | None, seed: int) -> list[str]:
    """A seeded subset of at most ``limit`` ids, in the original order."""
    if limit is None or limit >= len(ids):
        return list(ids)
    keep = set(random.Random(seed).sample(ids, limit))
    return [i for i in ids if i in keep]


def mix_key(settings: GRPOSettings, none_ratio: float) -> dict:
    key = {k: getattr(settings, k) for k in MIX_KEYS}
    key["none_ratio"] = round(none_ratio, 12)
    return key


def load_or_build_mix(settings: GRPOSettings, hard: list[str], easy: list[str], labels: dict[str, str],
                      none_ratio: float, write: bool = True) -> tuple[list[list[str]], list[str]]:
    """The per-epoch mixes and the hard ids they use: read from ``mix.json`` when it exists, else built and saved.

    A saved mix built with other mix settings is refused (delete the variant's directory to rebuild).
    """
    from morelib.mixing import build_epoch_mixes

    path = settings.work_dir / MIX_FILE
    key = mix_key(settings, none_ratio)
    if path.exists():
        saved = json.loads(path.read_text())
        for name, value in key.items():
            if saved.get("settings", {}).get(name) != value:
                raise ValueError(f"{path}: field 'settings.{name}' is {saved.get('settings', {}).get(name)!r} "
                                 f"but this run has {value!r}; delete {settings.work_dir} to rebuild the mix")
        if write:
            print(f"[grpo] reusing the saved mix {path}", flush=True)
        return saved["epochs"], saved["hard_ids"]
    if not write:
        raise FileNotFoundError(f"{path}: the main process should have saved the mix before this one reads it")
    hard = _subset(hard, settings.max_hard_samples, settings.seed)
    easy = _subset(easy, settings.max_easy_samples, settings.seed + 1)
    mixes = build_epoch_mixes(hard, easy, labels, epochs=settings.epochs, gamma=settings.gamma,
                              variant=settings.variant, none_ratio=none_ratio, seed=settings.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": key, "hard_ids": hard, "n_easy_pool": len(easy), "epochs": mixes}) + "\n")
    tmp.replace(path)  # atomic: a crash never leaves half a mix to be "reused"
    return mixes, hard


def prompts_per_generation(settings: GRPOSettings, num_processes: int) -> int:
    """Distinct prompts in one generation batch; each batch serves ``num_iterations`` optimizer updates."""
    completions = settings.per_device_batch_size * num_processes * settings.gradient_accumulation_steps
    if completions % settings.num_generations:
        raise ValueError(f"GRPOSettings: {completions} completions per update (per_device_batch_size x processes x "
                         f"gradient_accumulation_steps) is not a multiple of num_generations={settings.num_generations}")
    return completions // settings.num_generations


def epoch_end_steps(mixes: list[list[str]], settings: GRPOSettings, num_processes: int) -> list[int]:
    """The optimizer update at which each mix epoch ends.

    A generation batch that straddles two epochs counts to the earlier one; TRL drops the rows of
    an incomplete last batch, so the last epoch ends at the last full one.
    """
    per_batch = prompts_per_generation(settings, num_processes)
    ends, total = [], 0
    for e, mix in enumerate(mixes):
        total += len(mix)
        batches = total // per_batch if e == len(mixes) - 1 else -(-total // per_batch)
        ends.append(batches * settings.num_iterations)
    return ends


def write_plan(settings: GRPOSettings, mixes, labels, hard_ids, num_processes: int):
    """Print the per-epoch plan and write it to ``plan.csv``; returns the table."""
    from morelib.mixing import format_plan, plan_table

    table = plan_table(mixes, labels, hard_ids)
    table["end_step"] = epoch_end_steps(mixes, settings, num_processes)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(settings.work_dir / PLAN_FILE)
    print("[grpo] " + format_plan(table, settings.variant), flush=True)
    dropped = int(table["total"].sum()) % prompts_per_generation(settings, num_processes)
    if dropped:
        print(f"[grpo] the last {dropped} row(s) of epoch {len(mixes)} do not fill a generation batch; "
              "TRL leaves them out", flush=True)
    return table


def prepare_mix(settings: GRPOSettings, num_processes: int = 1, train_samples=None, write: bool = True):
    """Read the split, build (or reuse) the mix, print and save the plan; returns (mixes, plan table).

    ``write=False`` (non-main processes) only reads a saved mix and neither prints nor saves the plan.
    """
    from morelib.data import load_split

    train = train_samples if train_samples is not None else load_split(settings.data_dir, "train")
    hard, easy, labels = read_difficulty_split(settings.split_path)
    none_ratio = settings.none_ratio if settings.none_ratio is not None else train_none_ratio(train)
    mixes, hard_used = load_or_build_mix(settings, hard, easy, labels, none_ratio, write=write)
    if not write:
        from morelib.mixing import plan_table

        plan = plan_table(mixes, labels, hard_used)
        plan["end_step"] = epoch_end_steps(mixes, settings, num_processes)
        return mixes, plan
    return mixes, write_plan(settings, mixes, labels, hard_used, num_processes)


# ----------------------------------------------------------------------------- rows


def build_dataset(samples: dict, ids: list[str], template_path: str | None = None):
    """A ``datasets.Dataset`` of the concatenated mix; images are loaded on access.

    Reading a row gives ``prompt`` (student prompt), ``images`` ([full image, crop]) and ``label``.
    """
    from datasets import Dataset

    from morelib.data import load_images
    from morelib.prompts import student_prompt

    missing = [i for i in ids if i not in samples]
    if missing:
        raise ValueError(f"mix ids not in the training split: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    template = Path(template_path).read_text() if template_path else None
    dataset = Dataset.from_dict({"id": list(ids), "label": [samples[i].label for i in ids]})

    def to_row(batch):
        out = {"id": batch["id"], "label": batch["label"], "prompt": [], "images": []}
        for sample_id in batch["id"]:
            sample = samples[sample_id]
            out["prompt"].append(student_prompt(sample, template))
            out["images"].append(list(load_images(sample)))
        return out

    dataset.set_transform(to_row)
    return dataset


# ----------------------------------------------------------------------------- logging


# Keys TRL logs only on steps that sample new completions; a reuse step (num_iterations > 1)
# trains on the same completions, so its row repeats them.
GENERATION_PREFIXES = ("rewards/", "reward", "frac_reward_zero_std", "completions/", "num_tokens")


def step_logger(path: Path, epoch_ends: list[int]):
    """A TrainerCallback appending one JSON row per log event to ``path`` (main process only)."""
    import torch
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        def __init__(self):
            self.last_generation: dict = {}
            self.started = time.time()

        def on_train_begin(self, args, state, control, **kwargs):
            # A resumed run repeats the steps after its checkpoint: drop their old rows.
            if state.is_world_process_zero and path.exists():
                rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                keep = [r for r in rows if r.get("step", 0) <= state.global_step]
                path.write_text("".join(json.dumps(r) + "\n" for r in keep))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "train_runtime" in logs:
                return
            generated = any(k.startswith("rewards/") for k in logs)
            if generated:
                self.last_generation = {k: v for k, v in logs.items() if k.startswith(GENERATION_PREFIXES)}
            row = {**self.last_generation, **logs}
            step = state.global_step
            row.update(step=step, generated=generated,
                       mix_epoch=next((e + 1 for e, end in enumerate(epoch_ends) if step <= end), len(epoch_ends)),
                       time_s=round(time.time() - self.started, 3), peak_rss_mb=peak_rss_mb())
            if torch.cuda.is_available():
                row["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")

    return StepLogger()


def read_log(run_dir: str | Path, variant: str) -> list[dict]:
    """The step log of a variant (``run_dir/grpo/<variant>/log.jsonl``)."""
    from morelib.config import resolve_run_dir

    path = resolve_run_dir(run_dir) / "grpo" / variant / LOG_FILE
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- training


def grpo_config(settings: GRPOSettings):
    """TRL's GRPOConfig with every setting that matters given explicitly (TRL's defaults differ)."""
    import torch
    from trl import GRPOConfig

    vllm = {}
    if settings.use_vllm:
        vllm = dict(vllm_mode=settings.vllm_mode, vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
                    vllm_importance_sampling_correction=settings.vllm_importance_sampling_correction)
        if settings.vllm_server_base_url:
            vllm["vllm_server_base_url"] = settings.vllm_server_base_url
    return GRPOConfig(
        # Without it, a multi-process run on CPU initialises gloo but the Trainer does not treat
        # it as distributed: each process would train alone on all the data.
        use_cpu=not torch.cuda.is_available(),
        output_dir=str(settings.out_dir / CKPT_DIR),
        # The concatenated epochs are one pass, in order (approach (a)).
        num_train_epochs=1,
        shuffle_dataset=False,
        max_steps=settings.max_steps,
        loss_type=settings.loss_type,
        beta=settings.beta,
        epsilon=settings.epsilon,
        num_iterations=settings.num_iterations,
        num_generations=settings.num_generations,
        scale_rewards=settings.scale_rewards,
        use_bias_correction_kl=settings.use_bias_correction_kl,
        mask_truncated_completions=settings.mask_truncated_completions,
        reward_weights=list(settings.reward_weights),
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        max_completion_length=settings.max_completion_length,
        learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        lr_scheduler_type=settings.lr_scheduler_type,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        bf16=settings.bf16,
        activation_checkpointing=settings.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        use_vllm=settings.use_vllm,
        **vllm,
        remove_unused_columns=False,  # rows are made on access; "label" must reach the rewards
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        log_completions=settings.log_completions,
        dataloader_num_workers=0,
        report_to=settings.report_to or "none",
        disable_tqdm=True,  # the log lines stream into the notebook; a bar would flood it
    )


def build_trainer(settings: GRPOSettings, num_processes: int | None = None):
    """Model, processor, mix, dataset and GRPOTrainer of a run (prints the plan; no training yet)."""
    from accelerate import PartialState
    from trl import GRPOTrainer

    from morelib.checkpoints import resumable

    from morelib.data import load_split
    from morelib.model import load_model
    from morelib.rewards import get_reward_funcs

    if not settings.model_dir.is_dir():
        raise FileNotFoundError(f"{settings.model_dir}: the Stage 1 model is missing (notebook 03 writes it)")
    args = grpo_config(settings)  # first: it sets up the (CPU or GPU) distributed state
    train = load_split(settings.data_dir, "train")
    state = PartialState()
    # The main process builds and saves the mix; the others then read the saved one.
    with state.main_process_first():
        mixes, plan = prepare_mix(settings, num_processes or state.num_processes, train, write=state.is_main_process)
    dataset = build_dataset({s.id: s for s in train}, [i for mix in mixes for i in mix], settings.template_path)

    dtype = settings.model_dtype or ("bfloat16" if settings.bf16 else "float32")
    model, processor = load_model(settings.model_dir, dtype=dtype,
                                  device="cpu", freeze_vision=True)
    # TRL builds the reference model from this path: it must be the Stage 1 model itself.
    if Path(model.config._name_or_path).resolve() != settings.model_dir.resolve():
        raise RuntimeError(f"the reference model would load from {model.config._name_or_path}, "
                           f"not the Stage 1 model {settings.model_dir}")
    reward_funcs = get_reward_funcs(settings.reward_names, min_chars=settings.length_threshold,
                                    length_requires_format=settings.length_requires_format,
                                    answer_requires_format=settings.answer_requires_format)
    trainer = resumable(GRPOTrainer)(model=model, reward_funcs=reward_funcs, args=args,
                                      train_dataset=dataset, processing_class=processor)
    trainer.add_callback(step_logger(settings.work_dir / LOG_FILE, list(plan["end_step"])))
    return trainer


def is_done(output_dir: str | Path) -> bool:
    return (Path(output_dir) / DONE_FILE).exists()


def train(settings: GRPOSettings) -> Path:
    """Train (or resume, or skip when finished) one variant; returns the final model's directory."""
    out = settings.out_dir
    if is_done(out):
        print(f"[grpo] {out} already holds a finished model; skipping (delete it to retrain)", flush=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(settings)
    acc = trainer.accelerator
    print(f"[grpo] rank {acc.process_index} of world size {acc.num_processes}: {len(trainer.train_dataset)} rows, "
          f"variant {settings.variant}, reference model {settings.model_dir}", flush=True)
    last = last_checkpoint(out / CKPT_DIR)
    if last:
        print(f"[grpo] resuming from {last}", flush=True)
    started = time.time()
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(out))  # gathers sharded weights under DeepSpeed
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(out))
        steps = trainer.state.global_step
        summary = {"settings": asdict(settings), "world_size": acc.num_processes, "global_step": steps,
                   "rows": len(trainer.train_dataset), "train_seconds": round(time.time() - started, 1),
                   "peak_rss_mb": peak_rss_mb()}
        (out / DONE_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    acc.wait_for_everyone()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stage 2 GRPO with Progressive Sample-Mixing (run under accelerate launch)")
    parser.add_argument("--settings", required=True, help="JSON file of GRPOSettings fields")
    args = parser.parse_args(argv)
    # Tokenizer threads fight the training threads for the few CPU cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(GRPOSettings.from_json(args.settings))


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------- reading results


REWARD_KEYS = {"answer": "rewards/answer_reward/mean", "format": "rewards/format_reward/mean",
               "length": "rewards/length_reward/mean", "total": "reward"}


def log_frame(run_dir: str | Path, variant: str):
    """A variant's step log as a DataFrame indexed by step."""
    import pandas as pd

    return pd.DataFrame(read_log(run_dir, variant)).set_index("step")


def summarize(run_dir: str | Path, variants: list[str], window: int = 3):
    """Per variant: steps, the answer/format/length rewards averaged over the first and last ``window``
    generation steps, the share of groups without signal, s/step and peak memory."""
    import pandas as pd

    rows = []
    for variant in variants:
        frame = log_frame(run_dir, variant)
        gen = frame[frame["generated"]]
        row = {"variant": variant, "steps": int(frame.index.max())}
        for name in ("answer", "format", "length"):
            key = REWARD_KEYS[name]
            row[f"{name}_start"] = gen[key].head(window).mean()
            row[f"{name}_end"] = gen[key].tail(window).mean()
        row["frac_reward_zero_std"] = gen["frac_reward_zero_std"].mean()
        row["kl_end"] = frame["kl"].tail(window).mean()
        row["completion_length"] = gen["completions/mean_length"].mean()
        # The first step pays for warm-up (first generation, allocations); leave it out.
        row["s_per_step"] = frame["step_time"].iloc[1:].mean() if len(frame) > 1 else frame["step_time"].mean()
        row["peak_rss_mb"] = frame["peak_rss_mb"].max()
        if "cuda_peak_mb" in frame:
            row["cuda_peak_mb"] = frame["cuda_peak_mb"].max()
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def plot_reward_curves(run_dir: str | Path, variants: list[str], path: str | Path | None = None, smooth: int = 3):
    """One panel per variant: answer, format and length rewards per step (rolling mean over ``smooth``
    generation steps), with the mix-epoch boundaries marked. Saved to ``path`` (PNG and PDF) when given."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(variants), figsize=(4 * len(variants), 3.2), sharey=True, squeeze=False)
    for ax, variant in zip(axes[0], variants):
        frame = log_frame(run_dir, variant)
        gen = frame[frame["generated"]]
        for name, style in (("answer", "-"), ("format", "--"), ("length", ":")):
            ax.plot(gen.index, gen[REWARD_KEYS[name]].rolling(smooth, min_periods=1).mean(), style, label=name)
        for end in frame.groupby("mix_epoch").apply(lambda g: g.index.max()).iloc[:-1]:
            ax.axvline(end + 0.5, color="grey", linewidth=0.6)
        ax.set_title(variant)
        ax.set_xlabel("step")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel("mean reward (grey: epoch ends)")
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path.with_suffix(".png"), dpi=120)
        fig.savefig(path.with_suffix(".pdf"))
    return fig
