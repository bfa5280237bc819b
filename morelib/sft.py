"""Stage 1 SFT and the label-only baselines, with TRL's SFTTrainer, run under accelerate.

    accelerate launch -m morelib.sft --settings settings.json     (see morelib.launch)

One code path trains three kinds of model:
- Stage 1 (``target="reasoning"``): the filtered expert reasoning of notebook 02
  (``sft/stage1.jsonl`` rows ``{"id", "label", "completion"}``);
- the paper's Qwen2.5-VL-SFT and SFT(25%) baselines (``target="label"``): the completion is the
  bare gold label, for all training ids or for the ``stage1`` ids of ``split_ids.json``.

Each row is conversational prompt-completion: the student prompt (two image placeholders, then
the task description), the assistant completion, and ``images = [full image, object crop]``.
TRL then masks the prompt out of the loss. Images are loaded lazily per batch (``set_transform``)
because decoding every image up front is slow and memory-hungry on the real data. The vision
encoder and projector stay frozen (``morelib.model.load_model``); the LLM is trained fully or
with LoRA. Checkpoints go to ``output_dir/ckpt`` and a rerun resumes from the last one; the
final model (LoRA merged) and processor go to ``output_dir`` itself so later stages load it
by path, and the loss log to ``output_dir/log.jsonl``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from morelib.checkpoints import last_checkpoint, peak_rss_mb

TARGETS = ("reasoning", "label")
DONE_FILE = "sft_done.json"  # written last: its presence means the final model is complete
LOG_FILE = "log.jsonl"
CKPT_DIR = "ckpt"


@dataclass
class SFTSettings:
    """Everything one SFT run needs. Paths may be relative to the current directory."""

    model_path: str
    """Base model directory or hub id (the toy's ``models/base``, or ``Qwen/Qwen2.5-VL-7B-Instruct``)."""
    data_dir: str
    """MORE-layout data directory (the training split's images and facts are read from it)."""
    output_dir: str
    """Where the final model goes (``run_dir/checkpoints/<name>``); checkpoints go to ``output_dir/ckpt``."""
    target: str = "reasoning"
    """``"reasoning"``: train on ``train_file`` completions (Stage 1); ``"label"``: the completion is the bare label."""
    train_file: str | None = None
    """JSONL rows ``{"id", "label", "completion"}`` (notebook 02's ``sft/stage1.jsonl``); reasoning target only."""
    ids_file: str | None = None
    """Label target: JSON object of id lists (``annotation/split_ids.json``); None = every training id."""
    ids_key: str | None = None
    """Label target: which list of ``ids_file`` to train on (``"stage1"`` for the 25% baseline)."""
    epochs: float = 20.0
    """Passes over the training rows (paper: 20)."""
    per_device_batch_size: int = 8
    """Rows per device per step (paper: 8)."""
    gradient_accumulation_steps: int = 2
    """Steps accumulated per optimizer update (paper: 2)."""
    learning_rate: float = 1e-4
    """Peak learning rate (paper: 1e-4)."""
    warmup_ratio: float = 0.05
    """Share of the updates spent warming the learning rate up (paper: 0.05)."""
    lr_scheduler_type: str = "cosine"
    """Decay after warm-up (not stated in the paper; ms-swift's default is cosine)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_length: int | None = 2096
    """Longest tokenized row, prompt included (paper: 2096); longer rows are truncated at the end."""
    bf16: bool = False
    """bfloat16 mixed precision (paper: on; slower on CPU, so off for the toy)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (TRL's default is on; slower)."""
    use_lora: bool = False
    """Train LoRA adapters on the LLM instead of all LLM weights; the final model is merged."""
    lora_r: int = 8
    """LoRA rank (inferred: ms-swift 3.8's default)."""
    lora_alpha: int = 32
    """LoRA scaling numerator, scale = alpha / r (inferred: ms-swift 3.8's default)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA branch."""
    blank_images: bool = False
    """Ablation: replace both images by blank ones of the same size, so only the text is informative."""
    template_path: str | None = None
    """Student prompt template; None = the package's basic task description."""
    seed: int = 0
    """Seed of the data order and of any randomly initialised weights (LoRA)."""
    logging_steps: int = 10
    """Optimizer updates between two loss-log entries."""
    save_strategy: str = "epoch"
    """When to write a checkpoint to ``output_dir/ckpt``: ``"epoch"``, ``"steps"`` or ``"no"``."""
    save_steps: int = 500
    """Updates between checkpoints when ``save_strategy="steps"``."""
    save_total_limit: int | None = 2
    """Checkpoints kept (the oldest are deleted)."""
    max_steps: int = -1
    """Stop after this many updates (overrides ``epochs`` when > 0; for quick checks)."""
    dataloader_num_workers: int = 0
    """Processes loading images; 0 loads them in the training process."""
    report_to: list[str] = field(default_factory=list)
    """Trackers (``["wandb"]``, ``["tensorboard"]``); empty = none."""

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"SFTSettings.target: {self.target!r} is not one of {TARGETS}")
        if self.target == "reasoning" and not self.train_file:
            raise ValueError("SFTSettings.train_file: required for target='reasoning' (sft/stage1.jsonl)")
        if self.target == "label" and self.train_file:
            raise ValueError("SFTSettings.train_file: a label-only run takes ids_file/ids_key, not train_file")
        if bool(self.ids_file) != bool(self.ids_key):
            raise ValueError("SFTSettings.ids_file and ids_key: give both or neither")



# ----------------------------------------------------------------------------- training rows


def read_completions(path: str | Path) -> list[dict]:
    """Rows ``{"id", "label", "completion"}`` of an SFT file; errors name file, line and field."""
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from err
            for key in ("id", "completion"):
                if not isinstance(row.get(key), str) or not row[key]:
                    raise ValueError(f"{path}:{line_no}: field {key!r} missing or not a non-empty string")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no training rows")
    return rows


def read_ids(path: str | Path, key: str) -> list[str]:
    data = json.loads(Path(path).read_text())
    if key not in data:
        raise ValueError(f"{path}: field {key!r} missing (has {sorted(data)})")
    return list(data[key])


def training_rows(settings: SFTSettings, samples: dict) -> list[tuple[str, str]]:
    """(sample id, completion text) pairs for the run's target."""
    if settings.target == "reasoning":
        rows = read_completions(settings.train_file)
        missing = [r["id"] for r in rows if r["id"] not in samples]
        if missing:
            raise ValueError(f"{settings.train_file}: ids not in the training split of {settings.data_dir}: "
                             f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return [(r["id"], r["completion"]) for r in rows]
    ids = read_ids(settings.ids_file, settings.ids_key) if settings.ids_file else list(samples)
    missing = [i for i in ids if i not in samples]
    if missing:
        raise ValueError(f"{settings.ids_file}[{settings.ids_key!r}]: ids not in the training split: {missing[:5]}")
    return [(i, samples[i].label) for i in ids]


def blank_like(image):
    from PIL import Image

    return Image.new("RGB", image.size, (255, 255, 255))


def build_dataset(settings: SFTSettings, samples: dict, rows: list[tuple[str, str]]):
    """A ``datasets.Dataset`` of ids and completions whose rows are made on access.

    Reading a row gives ``prompt`` (student prompt), ``completion`` (assistant turn) and
    ``images`` (full image, crop): the shape TRL's vision collator expects.
    """
    from datasets import Dataset

    from morelib.data import load_images
    from morelib.prompts import assistant_turn, student_prompt

    template = Path(settings.template_path).read_text() if settings.template_path else None
    dataset = Dataset.from_dict({"id": [i for i, _ in rows], "completion_text": [c for _, c in rows]})

    def to_conversation(batch):
        out = {"prompt": [], "completion": [], "images": []}
        for sample_id, text in zip(batch["id"], batch["completion_text"]):
            sample = samples[sample_id]
            images = list(load_images(sample))
            if settings.blank_images:
                images = [blank_like(im) for im in images]
            out["prompt"].append(student_prompt(sample, template))
            out["completion"].append(assistant_turn(text))
            out["images"].append(images)
        return out

    dataset.set_transform(to_conversation)
    return dataset


# ----------------------------------------------------------------------------- training


def sft_config(settings: SFTSettings):
    """TRL's SFTConfig with every setting that matters given explicitly (TRL's defaults differ)."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        # Without it, a multi-process run on CPU initialises gloo but the Trainer does not
        # treat it as distributed: each process trains alone on all the data.
        use_cpu=not torch.cuda.is_available(),
        output_dir=str(Path(settings.output_dir) / CKPT_DIR),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        lr_scheduler_type=settings.lr_scheduler_type,
        weight_decay=settings.weight_decay,
        max_length=settings.max_length,
        bf16=settings.bf16,
        gradient_checkpointing=settings.gradient_checkpointing,
        completion_only_loss=True,
        remove_unused_columns=False,  # the rows are made on access from columns the model never sees
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        save_strategy=settings.save_strategy,
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        dataloader_num_workers=settings.dataloader_num_workers,
        report_to=settings.report_to or "none",
        disable_tqdm=True,  # the loss lines stream into the notebook; a bar would flood it
    )


def trainer_class():
    """TRL's SFTTrainer, resuming full-model checkpoints correctly (see morelib.checkpoints)."""
    from trl import SFTTrainer

    from morelib.checkpoints import resumable

    return resumable(SFTTrainer)


def build_trainer(settings: SFTSettings):
    """The model, processor, dataset and SFTTrainer of a run (no training yet)."""
    from morelib.data import load_split
    from morelib.model import LoraSettings, load_model

    lora = (LoraSettings(r=settings.lora_r, alpha=settings.lora_alpha, dropout=settings.lora_dropout)
            if settings.use_lora else None)
    model, processor = load_model(settings.model_path, dtype="bfloat16" if settings.bf16 else "float32",
                                  device="cpu", lora=lora, freeze_vision=True)
    samples = {s.id: s for s in load_split(settings.data_dir, "train")}
    dataset = build_dataset(settings, samples, training_rows(settings, samples))
    trainer = trainer_class()(model=model, args=sft_config(settings), train_dataset=dataset, processing_class=processor)
    return trainer


def write_log(log_history: list[dict], path: Path) -> None:
    with open(path, "w") as f:
        for entry in log_history:
            f.write(json.dumps(entry) + "\n")


def read_log(output_dir: str | Path) -> list[dict]:
    """The loss log of a finished run (trainer ``log_history``, one entry per line)."""
    with open(Path(output_dir) / LOG_FILE) as f:
        return [json.loads(line) for line in f if line.strip()]


def is_done(output_dir: str | Path) -> bool:
    return (Path(output_dir) / DONE_FILE).exists()


def save_final(trainer, settings: SFTSettings) -> None:
    """Save the trained model (LoRA merged into the base) and the processor to ``output_dir``."""
    out = Path(settings.output_dir)
    if not settings.use_lora:
        trainer.save_model(str(out))  # gathers sharded weights under DeepSpeed
    else:
        adapter_dir = out / "adapter"
        trainer.save_model(str(adapter_dir))
        trainer.accelerator.wait_for_everyone()
        if trainer.is_world_process_zero():
            merge_adapter(settings, adapter_dir, out)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(out))


def merge_adapter(settings: SFTSettings, adapter_dir: Path, out: Path) -> None:
    """Reload the base model with the saved adapter merged in (load_model does the merge); save it."""
    from morelib.model import load_model

    merged, _ = load_model(adapter_dir, dtype="bfloat16" if settings.bf16 else "float32", device="cpu",
                           freeze_vision=False)
    merged.save_pretrained(str(out))


def train(settings: SFTSettings) -> Path:
    """Train (or resume, or skip when finished) one SFT run; returns the final model's directory."""
    out = Path(settings.output_dir)
    if is_done(out):
        print(f"[sft] {out} already holds a finished model; skipping (delete it to retrain)", flush=True)
        return out
    out.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(settings)
    acc = trainer.accelerator
    print(f"[sft] rank {acc.process_index} of world size {acc.num_processes}: "
          f"{len(trainer.train_dataset)} rows, target {settings.target}", flush=True)
    last = last_checkpoint(out / CKPT_DIR)
    if last:
        print(f"[sft] resuming from {last}", flush=True)
    started = time.time()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.time() - started
    save_final(trainer, settings)
    if trainer.is_world_process_zero():
        write_log(trainer.state.log_history, out / LOG_FILE)
        summary = {"settings": asdict(settings), "world_size": acc.num_processes,
                   "global_step": trainer.state.global_step, "rows": len(trainer.train_dataset),
                   "train_seconds": round(seconds, 1), "peak_rss_mb": peak_rss_mb()}
        (out / DONE_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    acc.wait_for_everyone()
    return out


def main(argv: list[str] | None = None) -> None:
    from morelib.launch import settings_from_argv

    # Tokenizer threads fight the training threads for the few CPU cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(settings_from_argv(SFTSettings, argv))


if __name__ == "__main__":
    main()


# ----------------------------------------------------------------------------- notebook helpers


def blank_image_samples(samples, image_dir: str | Path) -> list:
    """Copies of ``samples`` whose image is a blank one of the same size (so is the crop).

    The blank images are written once to ``image_dir``; evaluating the blank-images ablation
    on them works with any inference backend.
    """
    from dataclasses import replace

    from PIL import Image

    image_dir = Path(image_dir)
    out = []
    for sample in samples:
        path = image_dir / sample.split / sample.img_id
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(sample.image_path) as img:
                blank_like(img.convert("RGB")).save(path)
        out.append(replace(sample, image_path=path))
    return out


def plot_loss_curves(output_dirs: dict[str, str | Path], path: str | Path | None = None):
    """Training loss against epoch for finished runs (name -> output_dir); saved to ``path``.{png,pdf}."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, out in output_dirs.items():
        if not (Path(out) / LOG_FILE).exists():
            continue
        entries = [e for e in read_log(out) if "loss" in e]
        ax.plot([e["epoch"] for e in entries], [e["loss"] for e in entries], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".png", ".pdf"):
            fig.savefig(path.with_suffix(suffix), dpi=150)
    return fig
