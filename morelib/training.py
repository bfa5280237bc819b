"""The lifecycle SFT and GRPO share: skip a finished model, resume a killed run, write a summary.

A training stage (``morelib.sft``, ``morelib.grpo``) builds its TRL trainer and hands it to
:func:`train_to_done`, which

1. skips a finished model (:func:`skip_finished`, delete the folder to retrain), with a warning
   when it was trained with other settings;
2. resumes from the newest ``checkpoint-N`` of a killed run, with the saved weights
   (:func:`resumable` fixes how transformers 5 reloads full-model checkpoints);
3. saves the final model, writes the trainer's log history and, last, the summary: its presence
   means the model is complete.

The files are those of ``morelib.layout.ModelFolder``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from morelib.layout import ModelFolder


def resumable(trainer_cls):
    """A subclass of a transformers/TRL trainer class whose resume restores the saved weights.

    transformers 5 writes full-model checkpoints in the release's key layout (``model.layers...``)
    but reloads them with a plain non-strict ``load_state_dict``: no key matches, and training
    silently resumes from the initial weights. ``from_pretrained`` converts the keys, and a strict
    load proves that every weight came back.
    """

    class Resumable(trainer_cls):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            target = self.accelerator.unwrap_model(model if model is not None else self.model)
            if hasattr(target, "peft_config") or not (Path(resume_from_checkpoint) / "config.json").is_file():
                return super()._load_from_checkpoint(resume_from_checkpoint, model)
            dtype = next(target.parameters()).dtype
            saved = type(target).from_pretrained(resume_from_checkpoint, dtype=dtype)
            target.load_state_dict(saved.state_dict())  # strict: every weight must come back

    Resumable.__name__ = Resumable.__qualname__ = f"Resumable{trainer_cls.__name__}"
    return Resumable


def last_checkpoint(ckpt_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder under ckpt_dir, or None for a fresh start."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(ckpt_dir)) if Path(ckpt_dir).is_dir() else None


def leave_process_group() -> None:
    """Destroy the distributed process group, if any, at the end of a training process that succeeded.

    Left to interpreter shutdown, gloo's worker threads can abort a process whose run has finished
    ("terminate called without an active exception", SIGABRT). Only after success: a rank that
    failed must not wait here for ranks that are still in a collective.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def save_final_model(trainer, out: Path) -> None:
    """Save the trained model to ``out``; LoRA adapters are merged into their base first."""
    if not getattr(trainer.args, "use_lora", False):
        trainer.save_model(str(out))  # gathers sharded weights under DeepSpeed
        return
    adapter_dir = Path(out) / "adapter"
    trainer.save_model(str(adapter_dir))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        from morelib.model import load_model

        # load_model merges an adapter directory into its base on load.
        merged, _ = load_model(adapter_dir, dtype="bfloat16" if trainer.args.bf16 else "float32", device="cpu",
                               freeze_vision=False)
        merged.save_pretrained(str(out))


def lora_for(settings):
    """The LoRA of a stage's settings (``use_lora``, ``lora_*``), or None for full training."""
    if not settings.use_lora:
        return None
    from morelib.model import LLM_LINEAR_REGEX, LoraSettings

    targets = settings.lora_target_modules
    # "all-linear" with a frozen vision tower means the LLM's linear layers (ms-swift's meaning).
    return LoraSettings(r=settings.lora_r, alpha=settings.lora_alpha, dropout=settings.lora_dropout,
                        target_modules=LLM_LINEAR_REGEX if targets == ["all-linear"] else targets)


def format_duration(seconds: float) -> str:
    """``1h02m``, ``4m05s`` or ``12s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_printer(tag: str, lines: int = 50):
    """A TrainerCallback that prints about ``lines`` progress lines over a training run (main process
    only): ``[tag] step 120/2000 (6%): loss 0.512, 3.4 s/step, 1h46m left``.

    A line goes out with the first logged loss, then with the first log at or after every
    ``ceil(max_steps / lines)``-th step, and once at the end; with tqdm off (as in executed
    notebooks) these are the only signs of life of a run that takes hours. ``lines=0``: silent.
    """
    import math

    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self):
            self.started = time.time()
            self.first_step = 0
            self.every = 1
            self.next_due = 1
            self.printed = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.time()
            self.first_step = state.global_step
            self.every = max(1, math.ceil(state.max_steps / lines)) if lines else 0
            self.next_due = self.first_step + 1

        def line(self, state, loss=None) -> str:
            step, total = state.global_step, state.max_steps
            done = step - self.first_step
            per_step = (time.time() - self.started) / done if done else float("nan")
            left = format_duration(per_step * (total - step)) if done else "?"
            loss_text = f"loss {loss:.4g}, " if isinstance(loss, (int, float)) else ""
            return (f"[{tag}] step {step}/{total} ({100 * step / max(total, 1):.0f}%): {loss_text}"
                    f"{per_step:.2f} s/step, {left} left")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not lines or not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            if state.global_step < self.next_due:
                return
            print(self.line(state, logs["loss"]), flush=True)
            self.printed += 1
            self.next_due = (state.global_step // self.every + 1) * self.every

        def on_train_end(self, args, state, control, **kwargs):
            if lines and state.is_world_process_zero:
                spent = time.time() - self.started
                print(f"[{tag}] trained {state.global_step - self.first_step} steps in {format_duration(spent)}",
                      flush=True)
                self.printed += 1

    return Progress()


# The names inside a model folder, for callers that join them to a path themselves.
DONE_FILE, LOG_FILE = ModelFolder.DONE, ModelFolder.LOG


def is_done(model_dir: str | Path) -> bool:
    return ModelFolder(model_dir).finished


def read_summary(model_dir: str | Path) -> dict:
    from morelib.files import read_json

    return read_json(ModelFolder(model_dir).done)


# Settings that choose what a notebook runs or how it logs, not what a model learns.
NOT_LEARNED = frozenset({"variants", "extra_seeds", "logging_steps", "logging_first_step", "save_steps",
                         "save_total_limit", "report_to", "disable_tqdm", "log_completions",
                         "image_token_check_every", "dataloader_num_workers", "label_baselines",
                         "blank_images_ablation", "progress_lines", "attn_implementation",
                         "vllm_max_num_batched_tokens", "side_by_side"})


def changed_settings(model_dir: str | Path, settings) -> list[str]:
    """``key: saved -> now`` for each setting that a finished model was trained with and that is
    different now, leaving out ``NOT_LEARNED``. ``done.json`` saves the values the settings were
    built from; a key given on one side only is compared with the field's value (now) or its
    default (then, for a setting added since)."""
    from dataclasses import MISSING, fields

    from morelib.config import settings_values

    saved = read_summary(model_dir).get("settings", {})
    _, values = settings_values(settings)
    defaults = {f.name: f.default if f.default is not MISSING else
                (f.default_factory() if f.default_factory is not MISSING else None) for f in fields(settings)}
    changes = []
    for key in sorted((set(saved) | set(values)) - NOT_LEARNED):
        now = values[key] if key in values else getattr(settings, key, None)
        then = saved[key] if key in saved else defaults.get(key)
        if then != now:
            changes.append(f"{key}: {then!r} -> {now!r}")
    return changes


def read_log(model_dir: str | Path) -> list[dict]:
    """The trainer's log history of a finished model (one entry per line)."""
    from morelib.files import read_jsonl

    return read_jsonl(ModelFolder(model_dir).log)


def skip_finished(model_dir: str | Path, settings=None, tag: str = "train") -> bool:
    """Whether ``model_dir`` holds a finished model, which is then kept as it is.

    The one place that decides to skip a model, for the notebook (``launch.train_in_subprocess``,
    before any process starts) and the training process alike: it says so and, when ``settings``
    are given, warns about each learned setting that differs from the saved ones (``changed_settings``).
    """
    folder = ModelFolder(model_dir)
    if not folder.finished:
        return False
    print(f"[{tag}] {folder.root} already holds a finished model; skipping (delete it to retrain)", flush=True)
    changes = changed_settings(folder.root, settings) if settings is not None else []
    if changes:
        print(f"[{tag}] warning: {folder.done} was trained with other settings, kept as it is: "
              + "; ".join(changes), flush=True)
    return True


def train_to_done(model_dir: str | Path, build_trainer: Callable[[], Any],
                  save_final: Callable[[Any, Path], None] = save_final_model, summary: Callable[[Any], dict] | None = None,
                  tag: str = "train", settings=None) -> Path:
    """Train (or resume, or skip when finished) into ``model_dir``; returns it.

    ``build_trainer()`` makes the trainer (its ``args.output_dir`` is ``ModelFolder(model_dir).checkpoints``);
    ``save_final(trainer, model_dir)`` writes the final model; ``summary(trainer)`` adds to ``done.json``.
    ``settings`` (the run's settings object, whose values ``summary`` saves) are compared with a
    finished model's, so that a changed setting is not skipped in silence.
    """
    from morelib.files import write_json, write_jsonl

    model_dir = Path(model_dir)
    if skip_finished(model_dir, settings, tag):
        return model_dir
    model_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer()
    accelerator = trainer.accelerator
    print(f"[{tag}] rank {accelerator.process_index} of {accelerator.num_processes}: "
          f"{len(trainer.train_dataset)} rows -> {model_dir}", flush=True)
    last = last_checkpoint(trainer.args.output_dir)
    if last:
        print(f"[{tag}] resuming from {last}", flush=True)
    started = time.time()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.time() - started
    save_final(trainer, model_dir)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(model_dir))
        folder = ModelFolder(model_dir)
        write_jsonl(folder.log, trainer.state.log_history)
        write_json(folder.done, {
            "world_size": accelerator.num_processes, "global_step": trainer.state.global_step,
            "rows": len(trainer.train_dataset), "train_seconds": round(seconds, 1), "peak_rss_mb": peak_rss_mb(),
            **(summary(trainer) if summary else {}),
        })
    accelerator.wait_for_everyone()
    return model_dir
