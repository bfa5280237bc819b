"""The paper profile's code path on one GPU, with the real Qwen2.5-VL-7B architecture (random weights).

    python benchmarks/gpu_rehearsal.py [--root /tmp/gpu_rehearsal] [--only sft,grpo,inference]
    python benchmarks/gpu_rehearsal.py --tiny          # the same code on CPU, tiny model, tiny sizes

What it runs, each with the paper profile's settings (``configs/paper.yaml`` through
``morelib.config.load_settings``) and the package's own datasets, rewards and backends; only the
step counts and batch sizes are cut down:

* SFT steps, LoRA and full fine-tuning, bf16 and gradient checkpointing (TRL ``SFTTrainer``);
* GRPO steps with transformers rollouts (TRL ``GRPOTrainer``, ``use_vllm=False``), with LoRA:
  the paper profile's full-weight GRPO needs ZeRO-3 over several cards (policy, reference and
  AdamW states do not fit one 80 GB card);
* greedy inference at batch 16, 64 and 256 on two-image prompts of about 574 tokens with 512 new
  tokens, through ``morelib.inference``'s transformers backend, and a plain ``model.generate``
  on the same inputs in the same run as the baseline.

For each it prints tokens/s, MFU (model FLOPs against the card's dense bf16 peak) and peak GPU
memory, and writes them all to ``ROOT/rehearsal.json``.

The model is ``configs/models/qwen2_5_vl_7b_config.json`` (the public 7B architecture: 28
layers, hidden 3584, vocabulary 152,064, 32-block vision tower) initialised at random on the
GPU: nothing is downloaded. The tokenizer and processor are the tiny model's, built offline;
their ids are all below the 7B vocabulary, and the special token ids of the config are set to
theirs. The rows of the end-of-text tokens in ``lm_head`` are zeroed, so that random greedy
decoding never stops early and every path generates exactly the requested tokens.

MFU counts model FLOPs, not hardware FLOPs: per token 2N forward, 2N for the input gradients and
2N for the weight gradients (full) or none (LoRA: the adapters are tiny), N being the language
model's matmul parameters (embedding excluded, ``lm_head`` included); attention adds 4·L·d·ctx
forward; the frozen vision tower adds its forward once per image patch. Recomputation by
gradient checkpointing is not counted.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CONFIG_7B = REPO / "configs" / "models" / "qwen2_5_vl_7b_config.json"
PHASES = ("sft", "grpo", "inference")
# Dense bf16 peak of each card, TFLOP/s (vendor datasheets, without sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0,
                    "H100 PCIe": 756.5, "H100": 756.5, "A100": 312.0, "L40S": 362.1, "A10G": 70.0}
SPECIAL_IDS = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
               "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}


@dataclass
class Sizes:
    """How much of each phase runs. ``gpu()`` is the rehearsal; ``tiny()`` the CPU check of the same code."""

    sft_steps: int = 4                 # optimizer steps per SFT variant; the first is warm-up, not timed
    sft_batch: int = 8                 # rows per step (the paper's per-device batch)
    completion_tokens: int = 500       # SFT completion length (the expected expert reasoning)
    grpo_steps: int = 2                # GRPO steps (with num_iterations 2: one rollout, two updates)
    grpo_batch: int = 16               # completions per step (the paper's per-device batch)
    grpo_generations: int = 8          # completions per prompt
    grpo_completion_tokens: int = 256  # rollout length (the paper's is 1,024)
    batches: list[int] = field(default_factory=lambda: [16, 64, 256])
    new_tokens: int = 512
    inference_rounds: int = 2          # each path timed this often, alternating; the fastest is reported
    prompt_tokens: int | None = 574    # target mean prompt length (images are resized to reach it)
    train_facts: int = 64
    test_facts: int = 260

    @classmethod
    def tiny(cls) -> "Sizes":
        return cls(sft_steps=2, sft_batch=2, completion_tokens=12, grpo_steps=1, grpo_batch=2, grpo_generations=2,
                   grpo_completion_tokens=6, batches=[2, 4], new_tokens=6, prompt_tokens=None, train_facts=16,
                   test_facts=8)


# ----------------------------------------------------------------------------- hardware and FLOPs


def device_info(tiny: bool, peak_override: float | None) -> dict:
    import torch

    if tiny or not torch.cuda.is_available():
        return {"device": "cpu", "peak_tflops": peak_override}
    name = torch.cuda.get_device_name(0)
    peak = peak_override
    if peak is None:
        peak = next((v for k, v in sorted(PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])) if k in name), None)
    return {"device": name, "peak_tflops": peak, "torch": torch.__version__}


def reset_peak():
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass
class FlopModel:
    """Model FLOPs of a Qwen2.5-VL (see the module docstring)."""

    llm_params: int     # matmul parameters of the language model incl. lm_head, excl. embeddings
    vision_params: int
    layers: int
    hidden: int

    @classmethod
    def of(cls, model) -> "FlopModel":
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        text = inner.config.get_text_config()
        total = sum(p.numel() for n, p in inner.named_parameters() if "lora_" not in n)
        vision = sum(p.numel() for p in inner.model.visual.parameters())
        embed = inner.get_input_embeddings().weight.numel()
        return cls(total - vision - embed, vision, text.num_hidden_layers, text.hidden_size)

    def forward(self, tokens: float, ctx: float, patches: float = 0.0) -> float:
        return 2 * self.llm_params * tokens + 4 * self.layers * self.hidden * ctx * tokens + 2 * self.vision_params * patches

    def train(self, tokens: float, ctx: float, patches: float, lora: bool) -> float:
        # backward: input gradients as much as the forward, weight gradients again unless LoRA.
        llm = (4 if lora else 6) * self.llm_params * tokens + 12 * self.layers * self.hidden * ctx * tokens
        return llm + 2 * self.vision_params * patches


def mfu(flops: float, seconds: float, peak_tflops: float | None) -> float | None:
    if not peak_tflops or seconds <= 0:
        return None
    return round(flops / seconds / (peak_tflops * 1e12), 4)


# ----------------------------------------------------------------------------- the world and the model


def build_world(root: Path, sizes: Sizes, tiny: bool) -> tuple[Path, Path]:
    """Toy data (MORE layout) and the tiny model whose tokenizer and processor the rehearsal uses."""
    from morelib import toy
    from morelib.tiny import TinySettings, build_tiny_model

    data_dir = toy.generate(root / "data", toy.ToyConfig(seed=0, train=sizes.train_facts, valid=4,
                                                         test=sizes.test_facts))
    tiny_settings = TinySettings(hidden_size=64, intermediate_size=128, vocab_size=1024) if tiny else TinySettings()
    model_dir = build_tiny_model(root / "tiny_model", data_dir, seed=0, settings=tiny_settings)
    return data_dir, model_dir


def resize_for_prompt_length(data_dir: Path, processor, target: int) -> dict:
    """Resize every image of the world to one size chosen so that the mean prompt is ``target`` tokens."""
    from PIL import Image

    from morelib.data import load_split
    from morelib.token_counts import count_tokens
    from morelib.vision_tokens import crop_size, processor_limits

    limits = processor_limits(processor)
    samples = load_split(data_dir, "test")
    text = sum(c.text_tokens for c in count_tokens(samples, processor, limits)) / len(samples)

    def mean_prompt(width, height):
        return text + sum(limits.tokens(width, height) + limits.tokens(*crop_size(width, height, s.box))
                          for s in samples) / len(samples)

    candidates = [(28 * a, 28 * b) for a in range(2, 60) for b in range(2, 60) if 0.5 <= a / b <= 2.0]
    width, height = min(candidates, key=lambda wh: (abs(mean_prompt(*wh) - target), abs(wh[0] / wh[1] - 4 / 3)))
    for path in (data_dir / "img_org").rglob("*.jpg"):
        with Image.open(path) as image:
            resized = image.convert("RGB").resize((width, height), Image.BICUBIC)
        resized.save(path, quality=90)
    return {"image_size": [width, height], "mean_prompt_tokens": round(mean_prompt(width, height), 1)}


def random_7b(processor, device: str, attn_implementation: str = "sdpa"):
    """Qwen2.5-VL-7B's architecture with random bf16 weights on ``device``, special ids set to the tokenizer's."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    values = json.loads(CONFIG_7B.read_text())
    values.pop("_comment", None)
    tokenizer = processor.tokenizer
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in SPECIAL_IDS.items()}
    eos, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    values.update(ids, bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    values["text_config"].update(bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    if len(tokenizer) > values["text_config"]["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} ids, more than the model's vocabulary")
    config = Qwen2_5_VLConfig(**values)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16,
                                                               attn_implementation=attn_implementation)
    model.generation_config.eos_token_id = [eos, pad]
    model.generation_config.pad_token_id = pad
    return model


def load_rehearsal_model(model_dir: Path, processor, tiny: bool, attn_implementation: str = "sdpa"):
    import torch

    from morelib.model import freeze_vision_tower, load_model

    if tiny:
        model, _ = load_model(model_dir, dtype="bfloat16", device="cpu", attn_implementation=attn_implementation)
    else:
        model = random_7b(processor, "cuda", attn_implementation)
        freeze_vision_tower(model)
    tokenizer = processor.tokenizer
    stop = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    with torch.no_grad():
        # Random logits never pick a token whose logit is exactly 0 over ~150k others: no early stop.
        model.get_output_embeddings().weight[stop] = 0
    return model


# ----------------------------------------------------------------------------- phases


class StepTimer:
    """A trainer callback recording when each optimizer step ends, and the logged rollout lengths."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                sync()
                timer.begin = timer.begin if timer.begin is not None else time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                sync()
                timer.ends.append(time.perf_counter())

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "completions/mean_length" in logs:
                    timer.completion_lengths.append(float(logs["completions/mean_length"]))

        self.begin: float | None = None
        self.ends: list[float] = []
        self.completion_lengths: list[float] = []
        self.callback = Callback()

    def timed(self) -> tuple[int, float]:
        """(steps, seconds) after the first (warm-up) step; all steps when only one ran."""
        if len(self.ends) >= 2:
            return len(self.ends) - 1, self.ends[-1] - self.ends[0]
        return len(self.ends), (self.ends[-1] - self.begin) if self.ends else 0.0


class StepProfiler:
    """A trainer callback running ``torch.profiler`` over ``steps`` optimizer steps after two
    (the model's warm-up, then the profiler's), and writing the operators that took the most time
    to ``path``. The rehearsal's 4 SFT steps give 2 profiled ones."""

    def __init__(self, path: Path, steps: int = 2):
        import torch
        from transformers import TrainerCallback

        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.sort_by = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        self.profiler = torch.profiler.profile(activities=activities,
                                               schedule=torch.profiler.schedule(wait=1, warmup=1, active=steps))
        profiler = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                profiler.profiler.start()

            def on_step_end(self, args, state, control, **kwargs):
                profiler.profiler.step()

            def on_train_end(self, args, state, control, **kwargs):
                profiler.profiler.stop()
                table = profiler.profiler.key_averages().table(sort_by=profiler.sort_by, row_limit=30)
                path.write_text(table + "\n")

        self.callback = Callback()


def completion_text(tokenizer, tokens: int) -> str:
    """Reasoning-like text of exactly ``tokens`` tokens (the answer tags included)."""
    from morelib.tiny import REASONING_WORDS

    body = tokenizer(" ".join([REASONING_WORDS] * (tokens // 20 + 2)), add_special_tokens=False)["input_ids"]
    return tokenizer.decode(body[:max(1, tokens - 12)]) + " <answer>none</answer>"


def run_sft(model, processor, ctx: dict, lora: bool) -> dict:
    from trl import SFTTrainer

    from morelib.config import load_settings
    from morelib.data import load_split
    from morelib.model import apply_lora, freeze_vision_tower
    from morelib.overlong import sft_row_lengths
    from morelib.prompts import prompt_template
    from morelib.sft import build_dataset, grouped_by_counted_length
    from morelib.training import lora_for

    sizes: Sizes = ctx["sizes"]
    settings = load_settings("03_sft", "paper", ctx["overrides"], ctx["run_dir"], use_lora=lora,
                             model_name=f"rehearsal_sft_{'lora' if lora else 'full'}", max_steps=sizes.sft_steps,
                             per_device_train_batch_size=sizes.sft_batch, gradient_accumulation_steps=1,
                             save_strategy="no", report_to="none", logging_steps=1, dataloader_num_workers=0,
                             bf16=True, gradient_checkpointing=True)
    samples = {s.id: s for s in load_split(ctx["data_dir"], "train")}
    text = completion_text(processor.tokenizer, sizes.completion_tokens)
    rows = [(sample_id, text) for sample_id in samples]
    lengths = [n for _, n in sft_row_lengths(samples, rows, processor, prompt_fn=ctx["prompt_fn"])]
    mean_len = sum(lengths) / len(lengths)
    dataset = build_dataset(samples, rows, prompt_template(settings.prompt))
    if not lora:
        # peft froze every base weight when the LoRA phase wrapped this model, and unload() does not
        # thaw them: without this, full fine-tuning would train nothing (grad norm 0, no optimizer state).
        model.requires_grad_(True)
        freeze_vision_tower(model)
    trained = apply_lora(model, lora_for(settings)) if lora else model
    timer = StepTimer()
    callbacks = [timer.callback]
    if ctx.get("profile"):  # profiling slows the steps: their timings are then not the figures to report
        callbacks.append(StepProfiler(Path(ctx["root"]) / f"profile_sft_{'lora' if lora else 'full'}.txt").callback)
    reset_peak()
    # The profile's length grouping reads the pre-flight counts, as morelib.sft does.
    trainer = grouped_by_counted_length(SFTTrainer, lengths)(model=trained, args=settings, train_dataset=dataset,
                                                             processing_class=processor, callbacks=callbacks)
    trainer.train()
    steps, seconds = timer.timed()
    tokens = steps * sizes.sft_batch * mean_len
    patches = steps * sizes.sft_batch * ctx["patches_per_row"]
    flops = ctx["flops"].train(tokens, mean_len, patches, lora)
    result = {"steps_timed": steps, "seconds_per_step": round(seconds / max(steps, 1), 3),
              "rows_per_step": sizes.sft_batch, "mean_row_tokens": round(mean_len, 1),
              "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
              "mfu": mfu(flops, seconds, ctx["peak"]), "peak_memory_gb": peak_memory_gb(),
              "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
              "trainable_params": sum(p.numel() for p in trained.parameters() if p.requires_grad),
              "grad_norms": [round(float(h["grad_norm"]), 4) for h in trainer.state.log_history if "grad_norm" in h]}
    del trainer
    if lora:
        trained.unload()  # the adapters go; the base weights were never changed
    reset_peak()
    return result


def run_grpo(model, processor, ctx: dict) -> dict:
    from trl import GRPOTrainer

    from morelib.config import load_settings
    from morelib.data import load_split
    from morelib.grpo import build_dataset
    from morelib.model import LoraSettings, apply_lora
    from morelib.prompts import prompt_template
    from morelib.rewards import get_reward_funcs

    sizes: Sizes = ctx["sizes"]
    settings = load_settings("05_grpo", "paper", ctx["overrides"], ctx["run_dir"], use_vllm=False,
                             max_steps=sizes.grpo_steps, per_device_train_batch_size=sizes.grpo_batch,
                             num_generations=sizes.grpo_generations, gradient_accumulation_steps=1,
                             max_completion_length=sizes.grpo_completion_tokens, save_strategy="no",
                             report_to="none", logging_steps=1, bf16=True, gradient_checkpointing=True,
                             dataloader_num_workers=0, log_completions=False)
    samples = {s.id: s for s in load_split(ctx["data_dir"], "train")}
    ids = list(samples)[: sizes.grpo_steps * sizes.grpo_batch // sizes.grpo_generations * 2 + 2]
    dataset = build_dataset(samples, ids, prompt_template(settings.prompt))
    rewards = get_reward_funcs(settings)
    policy = apply_lora(model, LoraSettings())  # reference = the same weights, adapters off
    timer = StepTimer()
    reset_peak()
    trainer = GRPOTrainer(model=policy, reward_funcs=rewards, args=settings, train_dataset=dataset,
                          processing_class=processor, callbacks=[timer.callback])
    trainer.train()
    steps = len(timer.ends)
    seconds = (timer.ends[-1] - timer.begin) if timer.ends else 0.0
    generated = sum(timer.completion_lengths) * sizes.grpo_batch
    result = {"steps": steps, "seconds_per_step": round(seconds / max(steps, 1), 3),
              "completions_per_step": sizes.grpo_batch, "max_completion_length": sizes.grpo_completion_tokens,
              "generated_tokens": round(generated), "rollout_and_update_tokens_per_s": round(generated / seconds, 1)
              if seconds else None, "peak_memory_gb": peak_memory_gb()}
    del trainer
    policy.unload()
    reset_peak()
    return result


def run_inference(model, processor, ctx: dict, batch: int) -> dict:
    import torch

    from morelib.config import load_settings
    from morelib.data import load_split
    from morelib.inference import TransformersBackend
    from morelib.prompts import prompt_template

    sizes: Sizes = ctx["sizes"]
    test = load_split(ctx["data_dir"], "test")
    samples = (test * math.ceil(batch / len(test)))[:batch]
    template = prompt_template("reasoning")
    settings = load_settings("inference", "paper", ctx["overrides"], ctx["run_dir"], backend="transformers",
                             max_new_tokens=sizes.new_tokens, batch_size=batch, temperature=0.0)
    backend = TransformersBackend(model.eval(), processor)
    started = time.perf_counter()
    inputs = backend.encode(samples, template).to(model.device)
    sync()
    encode_seconds = round(time.perf_counter() - started, 3)

    def package() -> dict:
        # Encoding (chat template, images, processor) is part of the package's call, so it is timed.
        started = time.perf_counter()
        generations = backend.generate(samples, settings, template)
        sync()
        seconds = time.perf_counter() - started
        generated = sum(g.completion_tokens for g in generations)
        return _inference_figures(ctx, generated, sum(g.prompt_tokens for g in generations), batch, seconds)

    def plain() -> dict:
        started = time.perf_counter()
        with torch.inference_mode():
            ids = model.generate(**inputs, max_new_tokens=sizes.new_tokens, do_sample=False)
        sync()
        seconds = time.perf_counter() - started
        generated = int((ids.shape[1] - inputs["input_ids"].shape[1]) * batch)
        return _inference_figures(ctx, generated, int(inputs["attention_mask"].sum()), batch, seconds)

    # Alternate the two paths, several rounds: the first call at a new batch shape pays for the
    # allocator's growth and kernel selection, which must not count against whichever runs first.
    rounds: dict[str, list[dict]] = {"package": [], "plain_generate": []}
    for _ in range(sizes.inference_rounds):
        for name, path in (("package", package), ("plain_generate", plain)):
            reset_peak()
            sync()
            rounds[name].append(path())
    out = {name: min(runs, key=lambda r: r["seconds"]) for name, runs in rounds.items()}
    out["encode_seconds"] = encode_seconds  # the package's share of the call that plain generate skips
    out["seconds_each_round"] = {name: [r["seconds"] for r in runs] for name, runs in rounds.items()}
    if out["plain_generate"]["tokens_per_s"]:
        out["speedup_vs_plain"] = round(out["package"]["tokens_per_s"] / out["plain_generate"]["tokens_per_s"], 2)
    return out


def _inference_figures(ctx: dict, generated: int, prompt: int, batch: int, seconds: float) -> dict:
    flop_model: FlopModel = ctx["flops"]
    mean_prompt = prompt / batch
    mean_ctx = mean_prompt + generated / batch / 2
    flops = (flop_model.forward(prompt, mean_prompt / 2, batch * ctx["patches_per_row"])
             + flop_model.forward(generated, mean_ctx))
    return {"generated_tokens": generated, "mean_prompt_tokens": round(mean_prompt, 1), "seconds": round(seconds, 2),
            "tokens_per_s": round(generated / seconds, 1) if seconds else None, "mfu": mfu(flops, seconds, ctx["peak"]),
            "peak_memory_gb": peak_memory_gb()}


def warm_up(model, processor, data_dir: Path, template: str) -> None:
    """One short generate call, so that no timed call pays for kernel loading and allocator growth."""
    import torch

    from morelib.data import load_split
    from morelib.inference import TransformersBackend

    inputs = TransformersBackend(model, processor).encode(load_split(data_dir, "test")[:2], template).to(model.device)
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=4, do_sample=False)
    sync()


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/gpu_rehearsal"), help="work directory (rebuilt)")
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny model, tiny sizes: checks the code, not speed")
    parser.add_argument("--only", default=",".join(PHASES), help=f"comma-separated subset of {PHASES}")
    parser.add_argument("--batches", default=None, help="inference batch sizes, e.g. 16,64,256")
    parser.add_argument("--new-tokens", type=int, default=None, help="inference completion length")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds of each inference path")
    parser.add_argument("--profile", action="store_true",
                        help="profile SFT steps 3 and 4; the top operators go to ROOT/profile_sft_*.txt")
    parser.add_argument("--sft-steps", type=int, default=None)
    parser.add_argument("--grpo-steps", type=int, default=None)
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the card, if not known")
    parser.add_argument("--sft-speed", choices=("before", "after"), default="after",
                        help="after (the package now): attn_implementation auto and the frozen vision tower without "
                             "grad; before: sdpa and the tower back-propagated, as measured on 2026-11-27")
    args = parser.parse_args(argv)

    import torch

    from morelib.config import load_settings
    from morelib.data import load_images, load_split
    from morelib.model import load_processor
    from morelib.prompts import prompt_template, student_prompt
    from morelib.vision_tokens import processor_limits

    phases = [p for p in args.only.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"--only: unknown phase(s) {sorted(unknown)}; expected {PHASES}")
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no GPU: run with --tiny to check the code on CPU")
    sizes = Sizes.tiny() if args.tiny else Sizes()
    if args.batches:
        sizes.batches = [int(b) for b in args.batches.split(",")]
    sizes.new_tokens = args.new_tokens or sizes.new_tokens
    sizes.inference_rounds = args.rounds or sizes.inference_rounds
    sizes.sft_steps = args.sft_steps or sizes.sft_steps
    sizes.grpo_steps = args.grpo_steps or sizes.grpo_steps

    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = device_info(args.tiny, args.peak_tflops)
    data_dir, tiny_dir = build_world(root, sizes, args.tiny)
    overrides = [f"data_dir={data_dir}", f"base_model={tiny_dir}"]
    common = load_settings("common", "paper", overrides, str(root / "run"))
    processor = load_processor(tiny_dir, min_pixels=common.min_pixels, max_pixels=common.max_pixels)
    report = {"device": info, "sizes": asdict(sizes), "pixel_limits": asdict(processor_limits(processor))}
    if sizes.prompt_tokens:
        report["prompts"] = resize_for_prompt_length(data_dir, processor, sizes.prompt_tokens)
    print(f"[rehearsal] {info['device']}, peak {info['peak_tflops']} TFLOP/s bf16; world in {root}", flush=True)

    from morelib.model import resolve_attn_implementation, vision_without_grad

    attention = resolve_attn_implementation("auto", tag="rehearsal") if args.sft_speed == "after" else "sdpa"
    model = load_rehearsal_model(tiny_dir, processor, args.tiny, attention)
    if args.sft_speed == "after":
        vision_without_grad(model)
    report["sft_speed"] = {"setting": args.sft_speed, "attn_implementation": attention,
                           "vision_tower_without_grad": args.sft_speed == "after"}
    flops = FlopModel.of(model)
    report["model"] = {"llm_matmul_params": flops.llm_params, "vision_params": flops.vision_params,
                       "layers": flops.layers, "hidden": flops.hidden}
    template = prompt_template("reasoning")
    sample = load_split(data_dir, "test")[0]
    text = processor.apply_chat_template(student_prompt(sample, template), add_generation_prompt=True, tokenize=False)
    one = processor(text=[text], images=list(load_images(sample)), return_tensors="pt")
    ctx = {"sizes": sizes, "overrides": overrides, "run_dir": str(root / "run"), "data_dir": data_dir,
           "peak": info["peak_tflops"], "flops": flops, "prompt_fn": lambda s: student_prompt(s, template),
           "profile": args.profile, "root": root,
           "patches_per_row": int(one["image_grid_thw"].prod(dim=1).sum())}

    # Full fine-tuning last: it needs the most memory, and an out-of-memory there spoils nothing else.
    jobs = [("sft", "sft_lora", lambda: run_sft(model, processor, ctx, lora=True)),
            ("grpo", "grpo_lora", lambda: run_grpo(model, processor, ctx))]
    jobs += [("inference", f"inference_batch_{b}", (lambda b=b: run_inference(model, processor, ctx, b)))
             for b in sizes.batches]
    jobs += [("sft", "sft_full", lambda: run_sft(model, processor, ctx, lora=False))]
    if "inference" in phases:
        warm_up(model, processor, data_dir, template)
    failed = False
    for phase, name, job in jobs:
        if phase not in phases:
            continue
        try:
            report[name] = job()
        except (RuntimeError, ValueError) as error:  # an out-of-memory in one phase must not hide the others
            failed = True
            report[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            reset_peak()
        print(f"[rehearsal] {name}: {json.dumps(report[name])}", flush=True)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    (root / "rehearsal.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
