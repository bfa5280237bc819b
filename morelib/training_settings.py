"""The settings of the two training stages: ``03_sft`` and ``05_grpo``, which are TRL configs.

``SFTSettings`` is a ``trl.SFTConfig`` and ``GRPOSettings`` a ``trl.GRPOConfig``, as in open-r1, so
every TRL or transformers option can be set from a profile by its TRL name; they add only this
project's fields (paths, LoRA, the data mix, the rewards, the launcher). The other sections, the
shared mixins and the section table are in ``morelib.settings``.

They live apart because importing TRL (with transformers' trainer and peft) takes about 4.5 s: the
processes that never train (annotation, filtering, inference, reports) do not import this module.
``morelib.settings.SECTIONS`` imports it the first time a training section is asked for.
"""

from dataclasses import dataclass, fields

from trl import GRPOConfig, SFTConfig

from morelib.layout import ModelFolder, RunLayout
from morelib.settings import (ATTN_HELP, PROGRESS_HELP, BaseModelField, LaunchFields, LoraFields, PixelFields,
                              RunFields, check_attn, one_of, setting)


def _prompts():
    from morelib.prompts import PROMPTS

    return tuple(PROMPTS)


def _check_choices(config, *names: str) -> None:
    """transformers lists the choices of some fields but builds with any value; refuse others here."""
    for f in fields(config):
        choices = f.metadata.get("choices")
        if f.name in names and choices:
            one_of(f.name, getattr(config, f.name), choices)


def _cpu_without_gpu(config) -> None:
    """On a machine without a GPU, train on the CPU: transformers then accepts a profile's bf16 (so the
    paper profile builds anywhere), and a multi-process CPU run is treated as distributed (gloo)."""
    import torch

    if not torch.cuda.is_available():
        config.use_cpu = True


@dataclass
class SFTSettings(LaunchFields, LoraFields, PixelFields, BaseModelField, RunFields, SFTConfig):
    """``03_sft``: Stage 1 SFT and the label-only baselines, as a ``trl.SFTConfig``.

    TRL fields keep TRL's names and meanings (``num_train_epochs``, ``per_device_train_batch_size``,
    ``learning_rate``, ``warmup_steps`` (a float below 1 is a ratio), ``max_length``, ...). The
    profile sets the paper's values; TRL defaults that differ from the paper's framework are set
    explicitly there. ``output_dir`` is derived from ``run_dir`` and ``model_name``.
    """

    model_name: str = setting("stage1", "Checkpoint this run writes: checkpoints/<model_name> (stage1, sft_label_full, ...).")
    target: str = setting("reasoning", "reasoning: the filtered expert reasoning (Stage 1); label: the bare gold label (baselines).")
    prompt: str = setting("reasoning", "Student prompt: reasoning (think, six steps, answer) or label (answer with the label only).")
    ids_key: str | None = setting(
        None, "Label target: train on this list of annotation/split_ids.json; None = all. stage1 = every fact of "
              "the sampled 25%, also those whose expert reply the filter rejected (inferred reading of the paper's "
              "'the same 25% samples in Stage 1': a label target needs no expert reply, so the filter has nothing "
              "to judge, and the baseline gets a superset of Stage 1's facts, which can only narrow Stage 1's lead).")
    blank_images: bool = setting(False, "Ablation: blank both images, so only the text is informative.")
    overlong_policy: str = setting(
        "drop", "Rows longer than max_length: drop (counted and reported, as ms-swift does by default) or error. "
                "A completion is never truncated silently.")
    label_baselines: bool = setting(True, "Also train the paper's Qwen2.5-VL-SFT and SFT(25%) baselines.")
    blank_images_ablation: bool = setting(False, "Also train Stage 1 on blank images (does the model use the image?).")
    ablation_eval_limit: int | None = setting(None, "Test facts used to evaluate the ablation; None = all.")
    attn_implementation: str = setting("auto", ATTN_HELP)
    progress_lines: int = setting(50, PROGRESS_HELP)

    def __post_init__(self):
        one_of("target", self.target, ("reasoning", "label"))
        one_of("prompt", self.prompt, _prompts())
        one_of("overlong_policy", self.overlong_policy, ("drop", "error"))
        self._check_launch()
        check_attn(self.attn_implementation)
        _check_choices(self, "train_sampling_strategy")
        if self.progress_lines < 0:
            raise ValueError(f"progress_lines: {self.progress_lines} must be 0 (none) or more")
        self.output_dir = str(ModelFolder(self.model_dir).checkpoints)
        # Rows are built on access (morelib.sft.build_dataset) from columns the model never sees.
        self.remove_unused_columns = False
        _cpu_without_gpu(self)
        super().__post_init__()

    @property
    def model_dir(self):
        """The final model's directory, ``checkpoints/<model_name>``."""
        return RunLayout(self.run_dir).checkpoint(self.model_name)


@dataclass
class GRPOSettings(LaunchFields, LoraFields, PixelFields, RunFields, GRPOConfig):
    """``05_grpo``: Stage 2 GRPO with Progressive Sample-Mixing, as a ``trl.GRPOConfig``.

    The per-epoch mixes are built in advance and trained as one pass in order, so TRL's own
    epoch count is 1, its shuffling is off, and ``mix_epochs`` is the paper's epoch count. It reads
    the difficulty split and writes ``grpo/<variant>/``.
    """

    stage1_model: str | None = setting(None, "Policy start and KL reference; None = checkpoints/stage1.")
    model_dtype: str | None = setting(
        None, "Weights of policy and reference: None = bfloat16 with bf16 (DeepSpeed keeps fp32 master weights), "
              "else float32; float32 with bf16 keeps fp32 weights under autocast.")
    # --- the data mix (morelib.mixing) ---
    variants: list[str] = setting(["progressive", "raw", "balanced", "hard_only"],
                             "Variants the notebook trains: progressive is MORE-R1, the others are Figure 3's ablations.")
    variant: str = setting("progressive", "The variant this run trains.")
    extra_seeds: list[int] = setting(
        [], "Beyond the paper: train every variant again with each of these seeds, into "
            "checkpoints/grpo_<variant>_seed<N>, so that Figure 3 shows how much a variant moves with the seed; "
            "[] = one run per variant, with `seed`.")
    mix_epochs: int = setting(4, "Epochs of the mix (paper: 4).")
    gamma: float = setting(0.5, "Easy-share decay per epoch, progressive only (paper: 0.5; the formula "
                                "easy(e) = round(n_hard * gamma^(e-1)) is inferred).")
    none_ratio: float | None = setting(None, "Share of none among drawn easy samples; None = the training split's (paper).")
    max_hard_samples: int | None = setting(None, "A seeded subset of at most this many hard samples; None = all (paper).")
    max_easy_samples: int | None = setting(None, "A seeded subset of the easy pool; None = all (paper).")
    # --- rewards (morelib.rewards; TRL's reward_weights weighs them) ---
    reward_names: list[str] = setting(["format", "length", "answer"], "Reward functions by name (morelib.rewards.REWARDS): the paper's "
                                      "format, length and answer; 'consistency' (Step 6 concludes the answer's label), 'quotes' (every phrase "
                                      "the reasoning quotes is in the news text), 'entity' (Steps 2, 4 and 6 name the "
                                      "queried entity) and 'grounded_answer' (in place of 'answer': a right label whose "
                                      "quotes are all in the news text) are beyond the paper.")
    length_threshold: int = setting(1024, "The length reward pays outputs longer than this many characters "
                                          "(paper: 1,024; characters, not tokens, is inferred).")
    length_requires_format: bool = setting(False, "Guard, not in the paper: length reward only for well-formed outputs.")
    answer_requires_format: bool = setting(
        False, "Guard, not in the paper: answer reward only for well-formed outputs. false (inferred reading of "
               "the paper's answer reward, which compares labels): a bare label with no tags earns it.")
    prompt: str = setting("reasoning", "Student prompt template (reasoning).")
    image_token_check_every: int = setting(
        1, "Check every N-th batch that the prompt's image tokens match the processor's count for its images, and "
           "that the prompt ids vLLM returns are the trainer's (guards the vLLM path against TRL issues 6294/6401); "
           "0 = never.")
    vllm_max_num_batched_tokens: int | None = setting(
        None, "Colocated vLLM: tokens per engine step (TRL 1.16 fixes 4096). None = derived by morelib.preflight: the "
              "longest prompt, rounded up to 256, at least 4096, so that a prompt and both its images prefill in one step.")
    attn_implementation: str = setting("auto", ATTN_HELP)
    progress_lines: int = setting(50, PROGRESS_HELP)

    def __post_init__(self):
        from morelib.mixing import MIXING_VARIANTS
        from morelib.rewards import REWARD_NAMES

        one_of("variant", self.variant, MIXING_VARIANTS)
        for variant in self.variants:
            one_of("variants", variant, MIXING_VARIANTS)
        for name in self.reward_names:
            one_of("reward_names", name, REWARD_NAMES)
        one_of("model_dtype", self.model_dtype, (None, "float32", "bfloat16"))
        one_of("prompt", self.prompt, _prompts())
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_names):
            raise ValueError(f"reward_weights: {len(self.reward_weights)} weights for {len(self.reward_names)} "
                             f"rewards {self.reward_names}")
        self._check_launch()
        check_attn(self.attn_implementation)
        if self.progress_lines < 0:
            raise ValueError(f"progress_lines: {self.progress_lines} must be 0 (none) or more")
        if self.vllm_max_num_batched_tokens is not None and self.vllm_max_num_batched_tokens < 1:
            raise ValueError(f"vllm_max_num_batched_tokens: {self.vllm_max_num_batched_tokens} must be a positive "
                             "number of tokens, or null (derived)")
        # The concatenated mix epochs are one pass, in order.
        self.num_train_epochs = 1
        self.shuffle_dataset = False
        # Rows are built on access; the "label" column must reach the reward functions.
        self.remove_unused_columns = False
        self.output_dir = str(ModelFolder(self.model_dir).checkpoints)
        _cpu_without_gpu(self)
        super().__post_init__()

    @property
    def variant_run(self) -> str:
        """``<variant>``, or ``<variant>_seed<N>`` for a run with one of ``extra_seeds``."""
        return f"{self.variant}_seed{self.seed}" if self.seed in self.extra_seeds else self.variant

    @property
    def model_dir(self):
        """The final model of this run, ``checkpoints/grpo_<variant_run>``."""
        return RunLayout(self.run_dir).checkpoint(f"grpo_{self.variant_run}")

    @property
    def work_dir(self):
        """``grpo/<variant_run>``: plan, mix and step log (``layout.GrpoRunFolder``)."""
        return RunLayout(self.run_dir).grpo_dir(self.variant_run)

    @property
    def stage1_dir(self):
        from morelib.layout import resolve_path

        return resolve_path(self.stage1_model) if self.stage1_model else RunLayout(self.run_dir).checkpoint("stage1")
