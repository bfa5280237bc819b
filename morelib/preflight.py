"""Pre-flight: count the tokens every stage will feed the model, before any GPU time is spent.

    python -m morelib.preflight --profile paper [--set KEY=VALUE ...] [--run-dir DIR]

For every sample of every stage it counts what the model sees: the chat template and the
student prompt (the real tokenizer and chat template, one tokenization per distinct text), both
images (full image and object crop, by the processor's own arithmetic in
:mod:`morelib.vision_tokens`, from the image headers only), and the completion (the Stage 1
set's texts, the label, or the stage's budget). It checks each stage against its limit:

* ``sft_stage1``: prompt + expert reasoning against ``03_sft.max_length``. Before notebook 02
  has written ``sft/stage1.jsonl`` the completion is a budget (``01_annotation.expected_output_tokens``,
  the reasoning length the cost estimate assumes) and the check is an estimate: reported with the
  room ``max_length`` leaves for the reasoning, not fatal (``--strict`` makes it so);
* ``sft_label``: prompt + the bare label (the label-only baselines) against ``max_length``;
* ``grpo``: prompt + ``05_grpo.max_completion_length`` against vLLM's max model length
  (``vllm_max_model_length``; unset = derived here) or, without vLLM, the model's context;
* ``inference``: prompt + ``inference.max_new_tokens`` against the engine's ``max_model_len``.

For colocated vLLM rollouts it also derives ``05_grpo.vllm_max_num_batched_tokens`` when unset
(the longest GRPO prompt, rounded up, at least TRL's 4096) and estimates what vLLM's start-up
profiling needs inside the GRPO memory share (:func:`vllm_memory_estimate`): vLLM profiles its
vision encoder on the largest image ``max_pixels`` allows, whatever the data holds. A share that
cannot hold the estimate is a warning line, not a failure: the estimate is arithmetic, not a
measurement.

It prints each stage's distribution (max, p99) and the rows over the limit with their ids, and
exits with status 1 when a stage would truncate (or an image cannot be processed at all). A
training row is never cut silently: SFT drops over-long rows by name (:mod:`morelib.overlong`).
The counting itself is :mod:`morelib.token_counts`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from morelib.token_counts import TokenCount, TokenLengths, count_tokens
from morelib.vision_tokens import PixelLimits, max_tokens_per_image, processor_limits

SHOW_IDS = 10  # rows named per stage
ROUND_MODEL_LEN = 256  # a derived max model length is rounded up to a multiple of this


# ----------------------------------------------------------------------------- checking


def percentile(values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile (``q`` in [0, 100]) of non-empty ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def round_up(value: int, multiple: int = ROUND_MODEL_LEN) -> int:
    return max(multiple, math.ceil(value / multiple) * multiple)


@dataclass
class StageCheck:
    """One stage's rows checked against one limit."""

    name: str
    what: str                      # what is counted, e.g. "prompt + expert reasoning"
    limit: int | None
    limit_name: str                # where the limit comes from, e.g. "03_sft.max_length"
    counts: list[TokenCount]
    budget: int | None = None      # completion budget added to rows without a completion
    estimate: bool = False         # the completion is a budget: over-long rows are a risk, not a certainty

    def totals(self) -> list[tuple[str, int]]:
        return [(c.id, c.total(self.budget)) for c in self.counts if c.error is None]

    @property
    def errors(self) -> list[TokenCount]:
        return [c for c in self.counts if c.error is not None]

    @property
    def over(self) -> list[tuple[str, int]]:
        if self.limit is None:
            return []
        return [(i, n) for i, n in self.totals() if n > self.limit]

    @property
    def failed(self) -> bool:
        return bool(self.errors) or (bool(self.over) and not self.estimate)

    def summary(self) -> str:
        totals = [n for _, n in self.totals()]
        prompts = [c.prompt_tokens for c in self.counts if c.error is None]
        head = f"{self.name}: {len(self.counts)} rows, {self.what}"
        if self.budget is not None:
            head += f" (completion budget {self.budget})"
        lines = [head]
        if totals:
            lines.append(f"  prompt tokens max {max(prompts)}, p99 {percentile(prompts, 99)}; "
                         f"total max {max(totals)}, p99 {percentile(totals, 99)}")
        limit = "none" if self.limit is None else f"{self.limit} ({self.limit_name})"
        over = self.over
        status = "FAIL" if self.failed else ("AT RISK" if over else "ok")
        lines.append(f"  limit {limit}: {len(over)} rows over -> {status}")
        if self.estimate and self.limit is not None and prompts:
            lines.append(f"  room left for the completion: at least {self.limit - max(prompts)} tokens")
        if over:
            worst = max(over, key=lambda row: row[1])
            ids = ", ".join(i for i, _ in over[:SHOW_IDS])
            lines.append(f"  over the limit (first {min(SHOW_IDS, len(over))}): {ids}; longest {worst[0]} with {worst[1]}")
        for count in self.errors[:SHOW_IDS]:
            lines.append(f"  cannot process {count.id}: {count.error}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- over-long SFT rows


# ----------------------------------------------------------------------------- the profile's stages


@dataclass
class Limits:
    """The limits and budgets of a profile, as plain values (what the CLI reads from the settings)."""

    max_length: int | None                 # 03_sft.max_length
    sft_prompt: str = "reasoning"          # 03_sft.prompt
    reasoning_budget: int = 500            # 01_annotation.expected_output_tokens, before sft/stage1.jsonl exists
    max_completion_length: int = 1024      # 05_grpo.max_completion_length
    grpo_prompt: str = "reasoning"         # 05_grpo.prompt
    use_vllm: bool = True                  # 05_grpo.use_vllm
    vllm_max_model_length: int | None = None   # 05_grpo.vllm_max_model_length
    max_new_tokens: int = 1024             # inference.max_new_tokens (and the largest per-model cap)
    inference_backend: str = "vllm"        # inference.backend
    vllm_max_model_len: int | None = None  # inference.vllm_max_model_len
    model_context: int | None = None       # the model's max_position_embeddings
    vllm_mode: str = "colocate"            # 05_grpo.vllm_mode
    vllm_max_num_batched_tokens: int | None = None  # 05_grpo.vllm_max_num_batched_tokens
    vllm_gpu_memory_utilization: float = 0.3   # 05_grpo.vllm_gpu_memory_utilization
    gpu_memory_gb: float | None = None     # the card's memory (None: this machine's GPU, else DEFAULT_GPU_GB)
    model_config: Any = None               # the model's transformers config, for the memory estimate


# The paper's card (8 x A100 80GB): the memory the estimate assumes where no GPU is visible.
DEFAULT_GPU_GB = 80.0
GB = 1e9


def vllm_memory_estimate(config, max_pixels: int, max_num_batched_tokens: int, max_model_len: int,
                         bytes_per_value: int = 2) -> dict[str, float]:
    """A rough estimate, in GB, of what a vLLM engine for ``config`` (a Qwen2.5-VL transformers
    config) needs at start-up, before its KV cache is sized:

    * ``weights``: every parameter in bf16 (counted from the config's sizes);
    * ``encoder_profile``: the vision tower on the largest image ``max_pixels`` allows, which vLLM
      profiles whatever the data holds: 4 patches per LLM token, each carrying one block's
      hidden state, q/k/v and MLP activations at once (memory-efficient attention assumed);
    * ``encoder_cache``: that image's embeddings, kept for the language model;
    * ``prefill_profile``: one block of the language model on ``max_num_batched_tokens`` tokens;
    * ``kv_one_sequence``: the KV cache of one ``max_model_len`` sequence, which vLLM refuses to
      start without.

    Order-of-magnitude arithmetic for a warning, not a measurement of vLLM.
    """
    text = getattr(config, "text_config", config)
    vision = config.vision_config
    hidden, inter, layers = text.hidden_size, text.intermediate_size, text.num_hidden_layers
    heads, kv_heads = text.num_attention_heads, getattr(text, "num_key_value_heads", text.num_attention_heads)
    head_dim = hidden // heads
    kv_dim = kv_heads * head_dim
    text_params = layers * (2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * inter)
    text_params += text.vocab_size * hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2)
    v_hidden, v_inter, depth = vision.hidden_size, vision.intermediate_size, vision.depth
    merge = getattr(vision, "spatial_merge_size", 2)
    patch_in = vision.in_channels * getattr(vision, "temporal_patch_size", 2) * vision.patch_size ** 2
    merged = v_hidden * merge * merge
    vision_params = depth * (4 * v_hidden * v_hidden + 3 * v_hidden * v_inter) + patch_in * v_hidden
    vision_params += merged * merged + merged * getattr(vision, "out_hidden_size", hidden)
    tokens = max_tokens_per_image(max_pixels)
    patches = tokens * merge * merge
    per_patch = patch_in + 5 * v_hidden + 3 * v_inter
    per_token = 5 * hidden + 3 * inter
    return {
        "weights": (text_params + vision_params) * bytes_per_value / GB,
        "encoder_profile": patches * per_patch * bytes_per_value / GB,
        "encoder_cache": tokens * hidden * bytes_per_value / GB,
        "prefill_profile": max_num_batched_tokens * per_token * bytes_per_value / GB,
        "kv_one_sequence": 2 * layers * kv_dim * max_model_len * bytes_per_value / GB,
        "largest_image_tokens": tokens,
    }


def gpu_memory_gb() -> float | None:
    """This machine's first GPU's memory in GB, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / GB


@dataclass
class Report:
    checks: list[StageCheck]
    limits: PixelLimits
    derived: dict[str, int]                # settings left unset, with the value derived here
    notes: list[str] = field(default_factory=list)   # the vLLM memory estimate and its warning

    @property
    def failed(self) -> bool:
        return any(check.failed for check in self.checks)

    def text(self) -> str:
        per_image = max_tokens_per_image(self.limits.max_pixels)
        lines = [f"pixel limits: min_pixels={self.limits.min_pixels}, max_pixels={self.limits.max_pixels} "
                 f"(at most {per_image} tokens per image)"]
        lines += [check.summary() for check in self.checks]
        for name, value in self.derived.items():
            how = ("the longest prompt, rounded up, at least TRL's 4096" if name.endswith("num_batched_tokens")
                   else f"the longest row, rounded up to a multiple of {ROUND_MODEL_LEN}")
            lines.append(f"derived: {name} = {value} ({how}; set it in the profile to fix it)")
        lines += self.notes
        lines.append("preflight: FAILED, a stage would truncate or cannot process a row" if self.failed
                     else "preflight: ok")
        return "\n".join(lines)


def _engine_limit(uses_vllm: bool, setting: int | None, setting_name: str, need: int,
                  model_context: int | None, derived: dict[str, int]) -> tuple[int | None, str]:
    """The context a stage's engine has: vLLM's max model length (the setting, or derived from
    ``need`` when unset, recorded in ``derived``), never more than the model's own context."""
    context_name = "the model's max_position_embeddings"
    if not uses_vllm:
        return model_context, context_name
    if setting is not None:
        if model_context is not None and setting > model_context:
            return model_context, f"{context_name}, below {setting_name}={setting}"
        return setting, setting_name
    value = round_up(need)
    if model_context is not None and value > model_context:
        return model_context, f"{context_name}; {setting_name} would need {value}"
    derived[setting_name] = value
    return value, f"{setting_name}, derived"


def check_stages(splits: Mapping[str, Sequence], processor, pixel_limits: PixelLimits, limits: Limits,
                 stage1_rows: Sequence[tuple[str, str]] | None = None, strict: bool = False) -> Report:
    """Count and check every stage. ``splits``: split name -> samples; ``stage1_rows``: the Stage 1
    set's ``(id, completion)`` pairs, or None before notebook 02 has written it."""
    from morelib.prompts import PROMPTS, prompt_template, student_prompt

    def prompt_fn(kind):
        template = prompt_template(kind)
        return lambda sample: student_prompt(sample, template)

    tokens = TokenLengths(processor.tokenizer)
    sizes: dict = {}
    train = list(splits.get("train", []))
    by_id = {s.id: s for s in train}
    checks: list[StageCheck] = []

    # Stage 1 SFT: the real completions when they exist, else the expert's budget (an estimate).
    if stage1_rows is not None:
        missing = [i for i, _ in stage1_rows if i not in by_id]
        if missing:
            raise ValueError(f"sft/stage1.jsonl: ids not in the training split: {missing[:SHOW_IDS]}")
        counts = count_tokens([by_id[i] for i, _ in stage1_rows], processor, pixel_limits, dict(stage1_rows),
                              prompt_fn(limits.sft_prompt), sizes, tokens)
        checks.append(StageCheck("sft_stage1", "prompt + expert reasoning (sft/stage1.jsonl)", limits.max_length,
                                 "03_sft.max_length", counts))
    else:
        counts = count_tokens(train, processor, pixel_limits, None, prompt_fn(limits.sft_prompt), sizes, tokens)
        checks.append(StageCheck("sft_stage1", "prompt + expected reasoning length (no sft/stage1.jsonl yet: an estimate)",
                                 limits.max_length, "03_sft.max_length", counts, budget=limits.reasoning_budget,
                                 estimate=not strict))
    label_kind = "label" if "label" in PROMPTS else limits.sft_prompt
    counts = count_tokens(train, processor, pixel_limits, {s.id: s.label for s in train}, prompt_fn(label_kind),
                          sizes, tokens)
    checks.append(StageCheck("sft_label", "prompt + label (label-only baselines)", limits.max_length,
                             "03_sft.max_length", counts))

    derived: dict[str, int] = {}
    # GRPO: prompt + the completion budget must fit vLLM's context.
    grpo_counts = count_tokens(train, processor, pixel_limits, None, prompt_fn(limits.grpo_prompt), sizes, tokens)
    grpo_need = max((c.total(limits.max_completion_length) for c in grpo_counts if c.error is None), default=0)
    grpo_limit, grpo_name = _engine_limit(limits.use_vllm, limits.vllm_max_model_length,
                                          "05_grpo.vllm_max_model_length", grpo_need, limits.model_context, derived)
    checks.append(StageCheck("grpo", "prompt + max_completion_length", grpo_limit, grpo_name, grpo_counts,
                             budget=limits.max_completion_length))
    notes: list[str] = []
    if limits.use_vllm and limits.vllm_mode == "colocate":
        from morelib.rollouts import TRL_MAX_NUM_BATCHED_TOKENS

        batched = limits.vllm_max_num_batched_tokens
        if batched is None:
            longest_prompt = max((c.prompt_tokens for c in grpo_counts if c.error is None), default=0)
            batched = max(TRL_MAX_NUM_BATCHED_TOKENS, round_up(longest_prompt))
            derived["05_grpo.vllm_max_num_batched_tokens"] = batched
        if limits.model_config is not None and grpo_limit:
            notes += memory_notes(limits, pixel_limits, batched, grpo_limit)

    # Inference (04, 06, 07): every split, the longer of the two student prompts.
    rows = [s for name in ("train", "valid", "test") for s in splits.get(name, [])]
    per_kind = [count_tokens(rows, processor, pixel_limits, None, prompt_fn(kind), sizes, tokens)
                for kind in sorted(PROMPTS)]
    longest = [max(options, key=lambda c: c.prompt_tokens) for options in zip(*per_kind)]
    need = max((c.total(limits.max_new_tokens) for c in longest if c.error is None), default=0)
    limit, name = _engine_limit(limits.inference_backend == "vllm", limits.vllm_max_model_len,
                                "inference.vllm_max_model_len", need, limits.model_context, derived)
    checks.append(StageCheck("inference", "prompt + max_new_tokens", limit, name, longest,
                             budget=limits.max_new_tokens))
    return Report(checks, pixel_limits, derived, notes)


def memory_notes(limits: Limits, pixel_limits: PixelLimits, batched: int, max_model_len: int) -> list[str]:
    """The colocated engine's estimate against its memory share, as report lines."""
    estimate = vllm_memory_estimate(limits.model_config, pixel_limits.max_pixels, batched, max_model_len)
    card = limits.gpu_memory_gb or DEFAULT_GPU_GB
    where = "this machine's GPU" if limits.gpu_memory_gb else f"assumed: no GPU here, the paper's {DEFAULT_GPU_GB:.0f} GB card"
    share = limits.vllm_gpu_memory_utilization * card
    parts = ("weights", "encoder_profile", "encoder_cache", "prefill_profile", "kv_one_sequence")
    need = sum(estimate[key] for key in parts)
    lines = [f"vllm (05_grpo, colocate; rough estimate, not a measurement): weights {estimate['weights']:.1f} GB + "
             f"vision profiling on the largest allowed image ({estimate['largest_image_tokens']} tokens at "
             f"max_pixels={pixel_limits.max_pixels}) {estimate['encoder_profile'] + estimate['encoder_cache']:.1f} GB + "
             f"prefill profiling of {batched} tokens {estimate['prefill_profile']:.1f} GB + one "
             f"{max_model_len}-token sequence's KV cache {estimate['kv_one_sequence']:.2f} GB = {need:.1f} GB; "
             f"share {limits.vllm_gpu_memory_utilization} x {card:.0f} GB ({where}) = {share:.1f} GB"]
    room = share - need + estimate["kv_one_sequence"]
    if room > 0:
        per_token = estimate["kv_one_sequence"] / max_model_len
        lines.append(f"vllm: that leaves about {room:.1f} GB for the KV cache, {int(room / per_token)} tokens "
                     f"({room / estimate['kv_one_sequence']:.0f} sequences of {max_model_len})")
    if need > share:
        lines.append(f"warning: vLLM's colocated engine may not start or may have no room for its KV cache: about "
                     f"{need:.1f} GB needed in a {share:.1f} GB share; raise 05_grpo.vllm_gpu_memory_utilization, lower "
                     "common.max_pixels, or use vllm_mode: server (docs/gpu.md)")
    return lines


# ----------------------------------------------------------------------------- the command line


def _model_config(model_path: str | Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(model_path))


def model_context(model_path: str | Path) -> int | None:
    """The model's ``max_position_embeddings`` (vLLM's default max model length)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_path))
    text = getattr(config, "text_config", config)
    return getattr(text, "max_position_embeddings", None)


def limits_from_profile(profile) -> tuple[Any, Limits]:
    """``(common settings, Limits)`` of a loaded profile (a ``morelib.config.Profile``)."""
    common = profile.settings("common")
    sft = profile.settings("03_sft")
    grpo = profile.settings("05_grpo")
    annotation = profile.settings("01_annotation")
    inference = profile.settings("inference")
    caps = [inference.max_new_tokens, *getattr(inference, "max_new_tokens_by_model", {}).values()]
    limits = Limits(
        max_length=sft.max_length,
        sft_prompt=getattr(sft, "prompt", "reasoning"),
        reasoning_budget=annotation.expected_output_tokens,
        max_completion_length=grpo.max_completion_length,
        grpo_prompt=getattr(grpo, "prompt", "reasoning"),
        use_vllm=bool(grpo.use_vllm),
        vllm_max_model_length=grpo.vllm_max_model_length,
        max_new_tokens=max(caps),
        inference_backend=inference.backend,
        vllm_max_model_len=getattr(inference, "vllm_max_model_len", None),
        vllm_mode=grpo.vllm_mode,
        vllm_max_num_batched_tokens=getattr(grpo, "vllm_max_num_batched_tokens", None),
        vllm_gpu_memory_utilization=grpo.vllm_gpu_memory_utilization,
        gpu_memory_gb=gpu_memory_gb(),
    )
    return common, limits


class Skipped(Exception):
    """The pre-flight cannot run here (no data, no processor files); the message says why."""


def build_report(profile: str = "toy", overrides: Sequence[str] = (), run_dir: str | None = None,
                 strict: bool = False) -> tuple[str, Report]:
    """``(header line, report)`` of a profile; raises :class:`Skipped` when its data or model is absent.

    ``report.derived`` holds the vLLM context lengths derived for settings left unset
    (``05_grpo.vllm_max_model_length``, ``inference.vllm_max_model_len``): what to pass to vLLM.
    """
    from morelib.config import load_profile

    return report_for(load_profile(profile, overrides, run_dir), strict, name=str(profile))


def report_for(profile, strict: bool = False, name: str | None = None) -> tuple[str, Report]:
    """:func:`build_report` of a loaded profile (a ``morelib.config.Profile``)."""
    from morelib.data import SPLITS, load_split
    from morelib.filtering import read_stage1
    from morelib.layout import RunLayout
    from morelib.model import load_processor

    common, limits = limits_from_profile(profile)
    data_dir = Path(common.data_dir)
    if not (data_dir / "txt").is_dir():
        raise Skipped(f"no MORE data at {data_dir} (set common.data_dir; the toy profile writes it in 00_prepare)")
    local = Path(common.base_model).expanduser()
    if local.is_dir():  # a local model that cannot be read is an error to report, not a reason to skip
        from morelib.files import read_json

        for file_name in ("config.json", "preprocessor_config.json", "tokenizer_config.json"):
            if (local / file_name).is_file():
                read_json(local / file_name)  # a broken file: "path:line: not valid JSON (...)"
    try:
        processor = load_processor(common.base_model, min_pixels=common.min_pixels, max_pixels=common.max_pixels)
        limits.model_context = model_context(common.base_model)
        limits.model_config = _model_config(common.base_model)
    except OSError as error:  # FileNotFoundError included: no local copy and no hub access
        if local.is_dir():
            raise OSError(f"{local}: cannot load the model's processor or config "
                          f"({' '.join(str(error).split())[:300]})") from None
        raise Skipped(f"the processor files of {common.base_model} are not available "
                      f"({str(error).splitlines()[0]}); download the model or point common.base_model at a "
                      "local copy") from None
    splits = {split: load_split(data_dir, split) for split in SPLITS if (data_dir / "txt" / f"{split}.txt").is_file()}
    stage1_file = RunLayout(common.run_dir).stage1_set
    stage1_rows = None
    if stage1_file.is_file():
        stage1_rows = [(row["id"], row["completion"]) for row in read_stage1(stage1_file, required=("id", "completion"))]
    header = (f"preflight: profile {name or profile.name}, model {common.base_model}, data {data_dir}"
              + (f", Stage 1 set {stage1_file}" if stage1_rows is not None else ""))
    return header, check_stages(splits, processor, processor_limits(processor), limits, stage1_rows, strict)


def engine_lengths(profile, sections: tuple[str, ...] = ("inference", "05_grpo")) -> dict[str, int]:
    """``{"SECTION.KEY": value}``: the vLLM context lengths a loaded profile leaves unset where a vLLM
    engine runs (GRPO rollouts, inference), derived from the token counts; without them vLLM takes
    the model's own context (128k for Qwen2.5-VL). ``{}`` when none is needed or the counts cannot
    be made here. Notebook 05 passes it to ``morelib.config.load_profile(..., derive=engine_lengths)``;
    notebooks 04 and 06, which generate only, pass :func:`inference_lengths`. Only ``sections`` are
    looked at and derived."""
    inference = profile.settings("inference") if "inference" in sections else None
    grpo = profile.settings("05_grpo") if "05_grpo" in sections else None
    if not ((inference is not None and inference.backend == "vllm" and inference.vllm_max_model_len is None)
            or (grpo is not None and grpo.use_vllm
                and (grpo.vllm_max_model_length is None
                     or (grpo.vllm_mode == "colocate" and grpo.vllm_max_num_batched_tokens is None)))):
        return {}
    try:
        _, report = report_for(profile)
    except Skipped as skipped:
        print(f"preflight: cannot derive vLLM context lengths: {skipped}")
        return {}
    return {dotted: value for dotted, value in report.derived.items() if dotted.split(".", 1)[0] in sections}


def inference_lengths(profile) -> dict[str, int]:
    """:func:`engine_lengths` of the ``inference`` section only: what notebooks 04 and 06 need. They
    never build the GRPO section, so they never import TRL."""
    return engine_lengths(profile, ("inference",))


def run(profile: str = "toy", overrides: Sequence[str] = (), run_dir: str | None = None, strict: bool = False,
        out=None) -> int:
    """The pre-flight of a profile; prints the report and returns the exit status (0 ok, 1 fail, 2 skipped)."""
    out = out or sys.stdout
    try:
        header, report = build_report(profile, overrides, run_dir, strict)
    except Skipped as skipped:
        print(f"preflight: skipped: {skipped}", file=out)
        return 2
    print(header, file=out)
    print(report.text(), file=out)
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    from morelib import cli

    parser = cli.make_parser("python -m morelib.preflight", __doc__.splitlines()[0])
    parser.add_argument("--profile", default="toy", help="configs/<name>.yaml or a YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[SECTION.]KEY=VALUE",
                        help="override one setting, e.g. --set 03_sft.max_length=4096")
    parser.add_argument("--run-dir", default=None, help="run directory (default: the profile's)")
    parser.add_argument("--strict", action="store_true",
                        help="also fail when the Stage 1 check is only an estimate (no sft/stage1.jsonl yet)")
    return cli.run(parser, argv, lambda args: run(args.profile, args.overrides, args.run_dir, args.strict))


if __name__ == "__main__":
    sys.exit(main())
