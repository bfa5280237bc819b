"""Stage 2: GRPO on one Progressive Sample-Mixing variant (TRL's GRPOTrainer), run under accelerate.

    accelerate launch -m morelib.grpo --settings settings.json     (see morelib.launch)

Read top to bottom, one run is:

1. the mix: the difficulty split of notebook 04 and the variant's per-epoch mixes
   (``morelib.mixing``), built once, saved to ``grpo/<variant>/mix.json`` and reused by a resumed
   run; the epochs are concatenated and trained as one pass in order (``docs/paper-notes.md``,
   "Progressive Sample-Mixing": one optimizer, one schedule, ordinary checkpoints);
2. the rows: ``prompt`` (student prompt with two image placeholders), ``images`` ([full image,
   object crop], loaded on access) and ``label``, which TRL passes to the reward functions;
3. the trainer: the policy and the KL reference both start from the Stage 1 model (with
   ``beta > 0`` TRL loads a second, frozen copy from the same path); vision encoder and
   projector frozen; rewards from ``morelib.rewards``; one JSON row per optimizer step in
   ``grpo/<variant>/log.jsonl``;
4. the lifecycle shared with SFT (``morelib.training``): resume, final model, ``done.json``.

Every hyperparameter is a field of ``morelib.training_settings.GRPOSettings`` (a ``trl.GRPOConfig``),
passed to TRL as it is.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from morelib.layout import GrpoRunFolder
from morelib.training_settings import GRPOSettings

# The names inside grpo/<variant>/, for callers that join them to a path themselves.
PLAN_FILE, MIX_FILE, STEP_LOG = GrpoRunFolder.PLAN, GrpoRunFolder.MIX, GrpoRunFolder.STEP_LOG


# ----------------------------------------------------------------------------- 1. the mix


def prompts_per_generation(settings: GRPOSettings, num_processes: int) -> int:
    """Distinct prompts in one generation batch; each batch serves ``num_iterations`` optimizer updates."""
    from morelib.mixing import prompts_per_batch

    return prompts_per_batch(settings.per_device_train_batch_size, num_processes,
                             settings.gradient_accumulation_steps, settings.num_generations)


def variant_runs(settings: GRPOSettings) -> dict[str, GRPOSettings]:
    """The runs notebook 05 trains, by run name: each of ``variants`` with ``seed``, then again
    with each of ``extra_seeds`` (``progressive_seed1``, ...)."""
    from morelib.config import with_changes

    if settings.seed in settings.extra_seeds or len(set(settings.extra_seeds)) < len(settings.extra_seeds):
        raise ValueError(f"extra_seeds: {settings.extra_seeds} must be distinct and leave out seed {settings.seed}, "
                         "the main run's")
    runs = {}
    for seed in [settings.seed, *settings.extra_seeds]:
        for variant in settings.variants:
            run = with_changes(settings, variant=variant, seed=seed)
            runs[run.variant_run] = run
    return runs


def prepare_mix(settings: GRPOSettings, num_processes: int = 1, train_samples=None, write: bool = True):
    """Build (or reuse) the variant's mix; returns (per-epoch id lists, plan table).

    ``write=True`` (the main process) saves the mix and the plan and prints the plan; other
    processes only read the saved mix.
    """
    from morelib import mixing
    from morelib.data import load_split
    from morelib.difficulty import read_split
    from morelib.layout import RunLayout

    train = train_samples if train_samples is not None else load_split(settings.data_dir, "train")
    split = read_split(RunLayout(settings.run_dir).difficulty_split)
    none_ratio = settings.none_ratio if settings.none_ratio is not None else mixing.none_share([s.label for s in train])
    mixes, hard_used = mixing.load_or_build_mix(
        GrpoRunFolder(settings.work_dir).mix, split, variant=settings.variant, epochs=settings.mix_epochs,
        gamma=settings.gamma, none_ratio=none_ratio, seed=settings.seed,
        max_hard=settings.max_hard_samples, max_easy=settings.max_easy_samples, write=write)
    labels = {row["id"]: row["label"] for row in split}
    plan = mixing.plan_table(mixes, labels, hard_used)
    plan["end_step"] = mixing.epoch_end_steps(mixes, prompts_per_generation(settings, num_processes),
                                              settings.num_iterations)
    if write:
        from morelib.files import write_text

        write_text(GrpoRunFolder(settings.work_dir).plan, plan.to_csv())
        print("[grpo] " + mixing.format_plan(plan, settings.variant_run), flush=True)
        dropped = int(plan["total"].sum()) % prompts_per_generation(settings, num_processes)
        if dropped:
            print(f"[grpo] the last {dropped} row(s) of epoch {len(mixes)} do not fill a generation batch; "
                  "TRL leaves them out", flush=True)
    return mixes, plan


# ----------------------------------------------------------------------------- 2. the rows


def build_dataset(samples: dict, ids: list[str], template: str):
    """A ``datasets.Dataset`` of the concatenated mix: ``prompt``, ``images``, ``label``, ``source_text``
    (the news text, for the ``quotes`` reward) and ``entity`` (for the ``entity`` reward) per row."""
    from datasets import Dataset

    from morelib.data import load_images
    from morelib.prompts import student_prompt

    missing = [i for i in ids if i not in samples]
    if missing:
        raise ValueError(f"mix ids not in the training split: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    dataset = Dataset.from_dict({"id": list(ids), "label": [samples[i].label for i in ids],
                                 "source_text": [samples[i].text for i in ids], "entity": [samples[i].entity for i in ids]})

    def to_row(batch):
        out = {key: batch[key] for key in ("id", "label", "source_text", "entity")} | {"prompt": [], "images": []}
        for sample_id in batch["id"]:
            out["prompt"].append(student_prompt(samples[sample_id], template))
            out["images"].append(list(load_images(samples[sample_id])))
        return out

    dataset.set_transform(to_row)
    return dataset


# ----------------------------------------------------------------------------- 3. the trainer


# Keys TRL logs only on steps that sample new completions; a reuse step (num_iterations > 1)
# trains on the same completions, so its row repeats them.
GENERATION_PREFIXES = ("rewards/", "reward", "frac_reward_zero_std", "completions/", "num_tokens", "entropy")


def step_logger(path: Path, epoch_ends: list[int]):
    """A TrainerCallback appending one JSON row per optimizer step to ``path`` (main process only)."""
    import torch
    from transformers import TrainerCallback

    from morelib.files import read_jsonl, write_jsonl
    from morelib.rewards import answer_log_key
    from morelib.training import peak_rss_mb

    class StepLogger(TrainerCallback):
        def __init__(self):
            self.last_generation: dict = {}
            self.started = time.time()

        def on_train_begin(self, args, state, control, **kwargs):
            # A resumed run repeats the steps after its checkpoint: drop their old rows.
            if state.is_world_process_zero and path.exists():
                rows = read_jsonl(path, torn_tail_ok=True)
                write_jsonl(path, [r for r in rows if r.get("step", 0) <= state.global_step])

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
            if step in epoch_ends:  # one line per mix epoch keeps the notebook readable
                print(f"[grpo] mix epoch {row['mix_epoch']} done at step {step}: reward {row.get('reward', float('nan')):.3f}, "
                      f"answer {row.get(answer_log_key(row), float('nan')):.3f}", flush=True)

    return StepLogger()


def build_trainer(settings: GRPOSettings, num_processes: int | None = None):
    """Model, processor, mix, dataset and GRPOTrainer of one variant (prints the plan; no training yet)."""
    from accelerate import PartialState
    from trl import GRPOTrainer

    from morelib.data import load_split
    from morelib.model import load_model, load_processor, resolve_attn_implementation, vision_without_grad
    from morelib.prompts import prompt_template
    from morelib.rewards import get_reward_funcs
    from morelib.rollouts import engine_kwargs, with_vllm_rollouts
    from morelib.training import lora_for, progress_printer, resumable
    from morelib.vision_tokens import ImageTokenGuard, processor_limits, with_image_token_guard

    stage1 = settings.stage1_dir
    if not stage1.is_dir():
        raise FileNotFoundError(f"{stage1}: the Stage 1 model is missing (notebook 03 writes it)")
    train = load_split(settings.data_dir, "train")
    state = PartialState()
    # The main process builds and saves the mix; the others then read the saved one.
    with state.main_process_first():
        mixes, plan = prepare_mix(settings, num_processes or state.num_processes, train, write=state.is_main_process)
    dataset = build_dataset({s.id: s for s in train}, [i for mix in mixes for i in mix],
                            prompt_template(settings.prompt))

    dtype = settings.model_dtype or ("bfloat16" if settings.bf16 else "float32")
    # With LoRA, TRL's reference model is the same weights with the adapters disabled.
    model, processor = load_model(stage1, dtype=dtype, device="cpu", freeze_vision=True, lora=lora_for(settings),
                                  min_pixels=settings.min_pixels, max_pixels=settings.max_pixels,
                                  attn_implementation=resolve_attn_implementation(settings.attn_implementation,
                                                                                  tag="grpo"))
    vision_without_grad(model)
    # TRL builds the reference model from this path: it must be the Stage 1 model itself.
    if Path(model.config._name_or_path).resolve() != stage1.resolve():
        raise RuntimeError(f"the reference model would load from {model.config._name_or_path}, "
                           f"not the Stage 1 model {stage1}")
    rewards = get_reward_funcs(settings)
    # vLLM gets one image placeholder per image and our engine settings (morelib.rollouts, TRL issue 6294).
    trainer_cls = with_vllm_rollouts(with_image_token_guard(resumable(GRPOTrainer)), engine_kwargs(settings),
                                     check_every=settings.image_token_check_every)
    trainer = trainer_cls(model=model, reward_funcs=rewards, args=settings, train_dataset=dataset,
                          processing_class=processor)
    # TRL issue 6401: the prompt ids TRL builds must hold as many image tokens as the engine that
    # generates (vLLM) computes from the images, with the pixel limits saved in the Stage 1 model.
    trainer.image_token_guard = ImageTokenGuard.for_processor(
        processor, every=settings.image_token_check_every, limits=processor_limits(load_processor(stage1)))
    trainer.add_callback(step_logger(GrpoRunFolder(settings.work_dir).step_log, list(plan["end_step"])))
    trainer.add_callback(progress_printer(f"grpo {settings.variant_run}", settings.progress_lines))
    return trainer


# ----------------------------------------------------------------------------- 4. the lifecycle


def train(settings: GRPOSettings) -> Path:
    """Train (or resume, or skip when finished) one variant; returns the final model's directory."""
    from morelib.config import settings_values
    from morelib.training import train_to_done

    _, values = settings_values(settings)
    return train_to_done(settings.model_dir, lambda: build_trainer(settings), tag="grpo", settings=settings,
                         summary=lambda trainer: {"settings": values, "variant": settings.variant,
                                                   "seed": settings.seed})


def main(argv: list[str] | None = None) -> None:
    from morelib.launch import settings_from_argv
    from morelib.training import leave_process_group

    # Tokenizer threads fight the training threads for the few CPU cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train(settings_from_argv(argv))
    leave_process_group()


if __name__ == "__main__":
    main()
