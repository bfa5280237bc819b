"""Stage 1 SFT and the label-only baselines, with TRL's SFTTrainer, run under accelerate.

    accelerate launch -m morelib.sft --settings settings.json     (see morelib.launch)

One code path trains every supervised model of the paper (the notebook ``03_sft`` is the lesson):

- Stage 1 (``target="reasoning"``): the filtered expert reasoning of notebook 02 (the Stage 1 set,
  rows ``{"id", "label", "completion"}``), with the reasoning prompt;
- the Qwen2.5-VL-SFT and SFT(25%) baselines (``target="label"``, ``prompt="label"``): the
  completion is the bare gold label, for every training id or for the 25% (``ids_key="stage1"``),
  with the same settings as Stage 1, as in the paper.

Each row is conversational prompt-completion: the student prompt (two image placeholders, then
the task description), the assistant completion, and ``images = [full image, object crop]``;
TRL then masks the prompt out of the loss. Images are loaded per batch (``set_transform``), which
keeps memory flat on the real data. Rows longer than ``max_length`` are dropped and counted (or
refused, ``overlong_policy="error"``) before training: TRL would keep their start and cut the
completion, that is the answer, without a word. The vision encoder and projector stay frozen;
the LLM is trained fully or with LoRA (merged at the end).
"""

from __future__ import annotations

import os
from pathlib import Path

from morelib.layout import RunLayout
from morelib.training_settings import SFTSettings


# ----------------------------------------------------------------------------- training rows


def training_rows(settings: SFTSettings, samples: dict) -> list[tuple[str, str]]:
    """(sample id, completion text) pairs for the run's target."""
    from morelib.files import FileFormatError
    from morelib.filtering import read_stage1
    from morelib.splits import read_split_ids

    layout = RunLayout(settings.run_dir)
    if settings.target == "reasoning":
        path = layout.stage1_set
        rows = read_stage1(path, required=("id", "completion"))
        if not rows:
            raise FileFormatError(f"{path}: no training rows")
        missing = [r["id"] for r in rows if r["id"] not in samples]
        if missing:
            raise FileFormatError(f"{path}: ids not in the training split of {settings.data_dir}: "
                                  f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return [(r["id"], r["completion"]) for r in rows]
    ids = list(samples)
    if settings.ids_key:
        split_ids = read_split_ids(layout.root)
        if settings.ids_key not in split_ids:
            raise FileFormatError(f"{layout.split_ids}: field {settings.ids_key!r}: missing (has {sorted(split_ids)})")
        ids = list(split_ids[settings.ids_key])
    missing = [i for i in ids if i not in samples]
    if missing:
        raise FileFormatError(f"{layout.split_ids}: field {settings.ids_key!r}: ids not in the training split: {missing[:5]}")
    return [(i, samples[i].label) for i in ids]


def blank_like(image):
    from PIL import Image

    return Image.new("RGB", image.size, (255, 255, 255))


def conversation(sample, completion: str, template: str, blank_images: bool = False) -> dict:
    """One training row: ``prompt``, ``completion`` and ``images`` (full image, crop)."""
    from morelib.data import load_images
    from morelib.prompts import assistant_turn, student_prompt

    images = list(load_images(sample))
    if blank_images:
        images = [blank_like(image) for image in images]
    return {"prompt": student_prompt(sample, template), "completion": assistant_turn(completion), "images": images}


def build_dataset(samples: dict, rows: list[tuple[str, str]], template: str, blank_images: bool = False):
    """A ``datasets.Dataset`` of ids and completions whose conversations are made on access."""
    from datasets import Dataset

    dataset = Dataset.from_dict({"id": [i for i, _ in rows], "completion_text": [c for _, c in rows]})

    def to_conversation(batch):
        made = [conversation(samples[i], c, template, blank_images) for i, c in zip(batch["id"], batch["completion_text"])]
        return {key: [row[key] for row in made] for key in ("prompt", "completion", "images")}

    dataset.set_transform(to_conversation)
    return dataset


# ----------------------------------------------------------------------------- training


def grouped_by_counted_length(trainer_cls, lengths: list[int]):
    """A subclass of a transformers trainer class whose ``train_sampling_strategy: group_by_length``
    groups rows by ``lengths`` (the pre-flight's token count of each row), so that a batch pads
    less. transformers would otherwise read a ``length`` column, which on our datasets (rows built
    on access) means loading every image once before the first step."""

    class GroupedByCountedLength(trainer_cls):
        row_lengths = list(lengths)

        def _get_train_sampler(self, train_dataset=None):
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            from transformers.trainer_pt_utils import LengthGroupedSampler

            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=self.row_lengths)

    GroupedByCountedLength.__name__ = GroupedByCountedLength.__qualname__ = trainer_cls.__name__
    return GroupedByCountedLength


def build_trainer(settings: SFTSettings):
    """The model, processor, dataset and SFTTrainer of a run (no training yet)."""
    from trl import SFTTrainer

    from morelib.data import load_split
    from morelib.model import load_model, resolve_attn_implementation, vision_without_grad
    from morelib.overlong import apply_overlong_policy, sft_row_lengths
    from morelib.prompts import prompt_template, student_prompt
    from morelib.training import lora_for, progress_printer, resumable

    model, processor = load_model(settings.base_model, dtype="bfloat16" if settings.bf16 else "float32",
                                  device="cpu", lora=lora_for(settings), freeze_vision=True,
                                  min_pixels=settings.min_pixels, max_pixels=settings.max_pixels,
                                  attn_implementation=resolve_attn_implementation(settings.attn_implementation, tag="sft"))
    # The frozen tower is never back-propagated, even where TRL's LoRA + checkpointing set-up asks for it.
    vision_without_grad(model)
    samples = {s.id: s for s in load_split(settings.data_dir, "train")}
    template = prompt_template(settings.prompt)
    rows = training_rows(settings, samples)
    # Counted from the image headers and the real tokenizer, as the trainer will see each row.
    lengths = sft_row_lengths(samples, rows, processor, prompt_fn=lambda sample: student_prompt(sample, template))
    fitted = apply_overlong_policy(lengths, settings.max_length, settings.overlong_policy)
    print(f"[sft] {settings.model_name}: {fitted.message()}", flush=True)
    dataset = build_dataset(samples, fitted.kept, template, settings.blank_images)
    length_of = dict(lengths)
    # TRL checks and masks the completion itself; every row is known to fit, so nothing is cut.
    trainer_cls = grouped_by_counted_length(resumable(SFTTrainer), [length_of[row] for row in fitted.kept])
    trainer = trainer_cls(model=model, args=settings, train_dataset=dataset, processing_class=processor)
    trainer.dropped_overlong = [row_id for row_id, _ in fitted.dropped]
    trainer.add_callback(progress_printer(f"sft {settings.model_name}", settings.progress_lines))
    return trainer


def train(settings: SFTSettings) -> Path:
    """Train (or resume, or skip when finished) one SFT run; returns the final model's directory."""
    from morelib.config import settings_values
    from morelib.training import train_to_done

    _, values = settings_values(settings)
    return train_to_done(settings.model_dir, lambda: build_trainer(settings), tag="sft", settings=settings,
                         summary=lambda trainer: {"settings": values, "dropped_overlong": trainer.dropped_overlong})


def main(argv: list[str] | None = None) -> None:
    from morelib.launch import settings_from_argv
    from morelib.training import leave_process_group

    # Tokenizer threads fight the training threads for the few CPU cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(settings_from_argv(argv))
    leave_process_group()


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
