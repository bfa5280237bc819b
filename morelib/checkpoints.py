"""Resuming training from a checkpoint, correctly.

transformers 5 writes full-model checkpoints in the release's key layout (``model.layers...``)
but reloads them with a plain non-strict ``load_state_dict``: no key matches, and training
silently resumes from the *initial* weights. ``from_pretrained`` converts the keys, and a strict
load then proves that every weight came back.
"""

from __future__ import annotations

from pathlib import Path


def resumable(trainer_cls):
    """A subclass of a transformers/TRL trainer class whose resume restores the saved weights."""

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


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
