"""Every setting of the package: one documented field per hyperparameter, one class per profile section.

A profile (``configs/toy.yaml``, ``configs/paper.yaml``) gives each field its value; the field's
help text says what the paper states, or that the value is inferred and why (see
``docs/paper-notes.md``). A hyperparameter lives here and in the profiles, nowhere else:
notebooks and stage modules read it from the settings object that ``morelib.config`` builds.

The two training stages extend TRL's own configs, as open-r1 does: ``SFTSettings`` is a
``trl.SFTConfig`` and ``GRPOSettings`` a ``trl.GRPOConfig``, so every TRL or transformers option
(``report_to``, ``max_grad_norm``, ``vllm_max_model_length``, ``push_to_hub``, ...) can be set from
a profile by its TRL name. They add only this project's fields: paths, LoRA, the data mix,
the rewards, the launcher. They are in ``morelib.training_settings``, which only the processes that
train (or check a training section) import: TRL takes about 4.5 s to import.

Profile sections and their classes are listed in ``SECTIONS``. ``common`` values (run
directory, seed, data, base model, image resolution) go into every section whose class has a
field of the same name. A field that several sections share is declared once, in a small mixin
that each class combines: ``RunFields``, ``SeedField``, ``BaseModelField``, ``PixelFields``,
``LoraFields``, ``LaunchFields``.
"""

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def setting(default: Any, help: str) -> Any:
    """A dataclass field with its help text (shown by ``--help`` and in the notebooks)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


# How a training subprocess starts (morelib.launch documents each; it checks against this list).
LAUNCHERS = ("auto", "none", "multi_gpu", "torchrun")
BACKENDS = ("transformers", "vllm", "openai")  # morelib.inference's backends
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")  # what morelib.model.resolve_dtype reads


def one_of(name: str, value: Any, choices) -> None:
    """``ValueError("name: 'x' is not one of a, b (did you mean 'a'?)")`` unless ``value`` is a choice.

    Choices are checked when the settings are built, so ``--check`` finds a typo before any
    notebook runs; the message starts with the field's name, so morelib.config can blame the
    profile line or the ``--set`` that gave it.
    """
    import difflib

    choices = list(choices)
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"{name}: {value!r} is not one of {', '.join(str(c) for c in choices)}{hint}")


def _splits():
    from morelib.data import SPLITS

    return SPLITS


def _check_model_keys(name: str, keys) -> None:
    from morelib.run_models import MODEL_KEYS, run_model

    for key in keys:
        if run_model(key) is None:
            one_of(name, key, [*MODEL_KEYS, "grpo_<variant>_seed<N>"])


# Attention kernels of transformers; "auto" is resolved by morelib.model.resolve_attn_implementation.
ATTN_IMPLEMENTATIONS = ("auto", "flash_attention_2", "sdpa", "sdpa_gqa", "eager")
ATTN_HELP = ("Attention kernel of the transformers model, one of " + ", ".join(ATTN_IMPLEMENTATIONS) + ": auto = "
             "flash_attention_2 on a GPU where flash-attn is installed (under sdpa, transformers 5.17 runs the "
             "vision tower's window attention as a Python loop of small calls), else sdpa, with one warning line "
             "on a GPU; on a CPU sdpa_gqa (morelib.attention: sdpa that generates without copying the shared "
             "key/value heads). Not a hyperparameter of the paper: it changes speed, not the model.")
PROGRESS_HELP = ("Progress lines the notebook shows per model while it trains (step/total, loss, s/step, time "
                 "left), spread evenly over the run; 0 = none. Not learned.")


# ----------------------------------------------------------------------------- shared fields


@dataclass
class RunFields:
    """Where a section reads and writes: the run directory and the data."""

    run_dir: str = setting("runs/toy", "Run directory; every file a notebook hands on lives here (morelib.layout).")
    data_dir: str = setting("{run_dir}/data", "MORE-layout data: txt/, img_org/, ent_*_dict.pth (the NJUNLP/MORE release).")


@dataclass
class SeedField:
    """The run's seed (the TRL stages take TRL's own ``seed`` field instead)."""

    seed: int = setting(0, "Seed of sampling, data order, mixes and random initialisation (the paper states none).")


@dataclass
class BaseModelField:
    """The model a section starts from (SFT), evaluates zero-shot (06) or every stage starts from (common)."""

    base_model: str = setting(
        "Qwen/Qwen2.5-VL-7B-Instruct", "The LVLM every stage starts from (paper: Qwen2.5-VL-7B-Instruct): SFT starts "
                                       "from it, and it is the zero-shot row's model.")


@dataclass
class PixelFields:
    """Image resolution: the same limits in training, every inference backend and the pre-flight."""

    min_pixels: int | None = setting(
        None, "Smallest image area after resizing, in pixels, for training and every inference backend "
              "(not stated; inferred: ms-swift 3.8's Qwen2.5-VL template default). None = the processor's.")
    max_pixels: int | None = setting(
        None, "Largest image area after resizing, in pixels (28x28 pixels = one image token); the same value goes "
              "to SFT, GRPO, the HF processor, vLLM and the server path (not stated; inferred: ms-swift 3.8's "
              "default). None = the processor's own (up to 16,384 tokens per image).")


@dataclass
class LoraFields:
    """LoRA on the language model, for both training stages (the vision tower stays frozen)."""

    use_lora: bool = setting(True, "LoRA on the LLM instead of full training (not stated; inferred: ms-swift 3.8's "
                                   "default train type, and lr 1e-4 suggests it for SFT). In GRPO the reference is "
                                   "the adapter-free model. The final model is merged.")
    lora_r: int = setting(8, "LoRA rank (inferred: ms-swift 3.8 default).")
    lora_alpha: int = setting(32, "LoRA alpha, scale = alpha / r (inferred: ms-swift 3.8 default).")
    lora_dropout: float = setting(0.05, "Dropout on the LoRA branch (inferred: ms-swift 3.8 default).")
    lora_target_modules: list[str] = setting(
        ["all-linear"], "LoRA targets (inferred: ms-swift 3.8 default, every linear layer of the LLM; vision frozen).")


@dataclass
class LaunchFields:
    """How a training stage's subprocess starts (morelib.launch)."""

    num_processes: int = setting(1, "Training processes (GPUs); the paper used 8 A100s.")
    distributed: str = setting("auto", f"Launcher, one of {LAUNCHERS}: auto = accelerate launch.")
    deepspeed_config: str | None = setting(None, "DeepSpeed JSON for accelerate (configs/deepspeed/*.json); None = plain DDP.")
    side_by_side: int = setting(
        1, "Speed only, CPU: how many of the notebook's models train at once, each a one-process run with its share "
           "of the CPU cores as threads; 1 = one after another, each with every core (GPU runs: 1).")

    def _check_launch(self) -> None:
        one_of("distributed", self.distributed, LAUNCHERS)
        if self.side_by_side < 1:
            raise ValueError(f"side_by_side: {self.side_by_side} must be 1 or more")
        if self.side_by_side > 1 and (self.distributed != "none" or self.num_processes != 1):
            raise ValueError(f"side_by_side: {self.side_by_side} runs at once are for CPU one-process runs "
                             f"(distributed: none, num_processes: 1), not distributed={self.distributed!r} "
                             f"with num_processes={self.num_processes}")


# ----------------------------------------------------------------------------- the sections


def check_attn(value: str) -> None:
    one_of("attn_implementation", value, ATTN_IMPLEMENTATIONS)


@dataclass
class CommonSettings(PixelFields, BaseModelField, SeedField, RunFields):
    """``common:``: what every notebook shares."""

    profile: str = setting("toy", "Profile name; labels every figure and table (toy numbers are never the paper's).")
    trace_id: str | None = setting(None, "The sample every notebook follows (None = chosen by 00_prepare).")


@dataclass
class PrepareSettings(SeedField, RunFields):
    """``00_prepare``: the data (toy world or a check of the real release) and the toy's tiny model.
    The seed makes the toy world and the tiny model; ``data_dir`` is where the data is (paper) or
    is written (toy)."""

    profile: str = setting("toy", "Profile name.")
    base_model: str = setting("{run_dir}/models/base", "Where the tiny model is written (toy): here not a model to start from.")
    trace_id: str | None = setting(None, "The sample every notebook follows (None = chosen by morelib.trace.choose).")
    build_toy: bool = setting(True, "Write the synthetic toy world and tiny model (toy); False = validate the real data.")
    toy_train: int = setting(1500, "Toy training facts.")
    toy_valid: int = setting(300, "Toy validation facts.")
    toy_test: int = setting(500, "Toy test facts.")
    toy_cue_wordings: int = setting(1, "Wordings per cue in the toy's headlines (1 to 4; morelib.toy.WORDINGS).")
    tiny_model: dict = setting({}, "Overrides of the tiny Qwen2.5-VL's size (hidden_size, num_attention_heads, ...).")
    pretrain: dict = setting({}, "How the toy's base is pretrained before Stage 1 (morelib.pretrain.PretrainSettings: "
                                 "epochs, facts, corpus_seed, task_weights, learning_rate, ...); epochs 0 = a random base.")
    pretrain_cache: str | None = setting(None, "Folder of cached pretrained bases (None = $MORELIB_CACHE, else "
                                               "~/.cache/morelib); a base is reused while its inputs' hash matches.")
    overwrite: bool = setting(False, "Rebuild the toy data and model even when they exist.")
    n_show: int = setting(4, "Samples drawn in the notebook.")

    def __post_init__(self):
        from morelib.toy import CUES

        one_of("toy_cue_wordings", self.toy_cue_wordings, range(1, 1 + min(len(cue.wordings) for cue in CUES)))


@dataclass
class AnnotationSettings(SeedField, RunFields):
    """``01_annotation``: Stage 1 sampling and the expert's stepwise reasoning. Writes
    ``annotation/split_ids.json`` (the seed draws the stratified sample) and the expert store."""

    split: str = setting("train", "Split sampled for Stage 1.")
    fraction: float = setting(0.25, "Share of every relation sent to the expert (paper: 25%, stratified by relation).")
    offline_expert: bool = setting(False, "Serve the offline toy expert on a loopback port instead of calling base_url.")
    expert_mistake_rate: float = setting(0.0, "Offline expert only: share of replies it gets wrong (exercises the filter).")
    base_url: str = setting("https://api.openai.com/v1", "OpenAI-compatible endpoint of the expert.")
    model: str = setting("gpt-4o", "Expert model (paper: GPT-4o).")
    api_key_env: str = setting("OPENAI_API_KEY", "Name of the environment variable holding the key (never a file).")
    template_path: str | None = setting(None, "Expert prompt template; None = morelib/templates/expert_prompt.txt.")
    image_detail: str = setting("high", "image_url detail: low, high or auto (not stated; inferred: high).")
    concurrency: int = setting(8, "Requests in flight.")
    request_timeout: float = setting(120.0, "Seconds one attempt may take, from connecting to the reply's last byte.")
    max_retries: int = setting(8, "Retries per request on 429, 5xx, timeouts and broken replies (the openai client's "
                                  "own backoff).")
    dead_endpoint_timeout: float = setting(
        60.0, "Seconds without a usable reply, from the first request (refused connections, timeouts, 5xx, broken "
              "replies), after which the run stops; unsent samples stay pending for the next run.")
    max_tokens: int = setting(1024, "Completion cap per request.")
    temperature: float | None = setting(None, "Expert sampling temperature (not stated: None = the endpoint's default).")
    expected_output_tokens: int = setting(500, "Completion length assumed by the cost estimate.")
    price_input_per_m: float = setting(2.5, "USD per 1M input tokens (GPT-4o).")
    price_output_per_m: float = setting(10.0, "USD per 1M output tokens (GPT-4o).")
    batch_discount: float = setting(0.5, "Batch API price factor.")
    cost_threshold: float = setting(5.0, "USD; an estimate above this needs confirm_cost.")
    confirm_cost: bool = setting(False, "Spend more than cost_threshold.")
    write_batch_input: bool = setting(False, "Write Batch API input files (half price, 24 h) instead of calling online.")
    limit: int | None = setting(None, "Send only the first N pending requests (smoke tests).")
    progress: bool = setting(False, "Show a progress bar (off in executed notebooks: it floods them).")

    def __post_init__(self):
        from morelib.cost import DETAILS

        one_of("split", self.split, _splits())
        one_of("image_detail", self.image_detail, DETAILS)


@dataclass
class FilteringSettings(RunFields):
    """``02_filtering``: the paper's regex filter and the Stage 1 SFT set."""

    model: str | None = setting(None, "Expert model whose replies are filtered; None = 01_annotation's model.")
    n_examples: int = setting(1, "Rejected replies shown per reason.")


@dataclass
class GenerationSettings(PixelFields, SeedField):
    """``inference:``: how every model is decoded, by every backend (04, 06, 07 and 03's evaluations).

    The transformers, vLLM and OpenAI-compatible backends all receive these values explicitly;
    none inherits a model's ``generation_config`` (the Qwen release sets its own sampling defaults).
    """

    backend: str = setting("transformers", "transformers (in process), vllm (GPU; one subprocess per model) or openai (a server).")
    base_url: str | None = setting(None, "backend openai: the URL of an OpenAI-compatible server (vllm serve).")
    served_model_names: dict = setting({}, "backend openai: the served name of each model key; a missing key = the model's path.")
    dtype: str = setting("auto", "Weights dtype for generation (auto, bfloat16, float32).")
    batch_size: int = setting(16, "Samples per generate call (transformers, vLLM) or concurrent requests (openai).")
    max_new_tokens: int = setting(1024, "Longest completion in tokens (inferred: the GRPO completion length, 1,024).")
    max_new_tokens_by_model: dict = setting({}, "Per-model cap, e.g. label-only models answer in a few tokens.")
    temperature: float = setting(0.0, "0 = greedy (paper: vLLM, temperature 0).")
    top_p: float = setting(1.0, "Nucleus mass when sampling.")
    top_k: int = setting(0, "Top-k when sampling, 0 = off.")
    repetition_penalty: float = setting(1.0, "1.0 = none (set explicitly: the Qwen release's generation_config sets 1.05).")
    vllm_max_model_len: int | None = setting(None, "vLLM context in tokens; None = derived by morelib.preflight.")
    vllm_gpu_memory_utilization: float = setting(0.9, "GPU memory share of the inference engine.")
    request_timeout: float = setting(
        120.0, "backend openai: seconds one attempt may take, from connecting to the reply's last byte "
               "(inferred: a reasoning completion of 1,024 tokens takes well under a minute on a served 7B).")
    max_retries: int = setting(8, "backend openai: retries per request on 429, 5xx, timeouts and broken replies "
                                  "(the openai client's own backoff).")
    dead_endpoint_timeout: float = setting(
        60.0, "backend openai: seconds without a usable reply, from the first request, after which the run stops "
              "(refused connections, timeouts, 5xx); what was predicted is kept.")
    attn_implementation: str = setting("auto", "backend transformers: " + ATTN_HELP)
    served_model_name: str | None = setting(None, "backend openai: the name the server knows this model by "
                                                  "(set per model by for_model from served_model_names).")

    def __post_init__(self):
        one_of("backend", self.backend, BACKENDS)
        one_of("dtype", self.dtype, DTYPES)
        check_attn(self.attn_implementation)

    def for_model(self, key: str) -> "GenerationSettings":
        """A copy for one model: its own max_new_tokens and served name, when the profile gives them."""
        from dataclasses import replace

        return replace(self, max_new_tokens=self.max_new_tokens_by_model.get(key, self.max_new_tokens),
                       served_model_name=self.served_model_names.get(key, self.served_model_name))


@dataclass
class DifficultySettings(RunFields):
    """``04_difficulty``: the Stage 1 model answers the remaining 75%: right = easy, wrong = hard."""

    model: str | None = setting(None, "The model that splits the pool; None = checkpoints/stage1.")


# Fields the code sets itself: a profile that sets them is refused (config.py names them).
SFT_DERIVED = ("output_dir", "remove_unused_columns")
GRPO_DERIVED = ("output_dir", "num_train_epochs", "shuffle_dataset", "remove_unused_columns")


@dataclass
class EvaluationSettings(BaseModelField, SeedField, RunFields):
    """``06_evaluation``: Table 1 and Figure 3 on the test split (the seed draws the bootstrap)."""

    profile: str = setting("toy", "Profile name (labels Table 1 and the figures).")
    split: str = setting("test", "Evaluated split (settings are chosen on valid, never on test).")
    models: list[str] = setting(["zero_shot", "sft_label_full", "sft_label_25", "stage1", "grpo_progressive",
                            "grpo_raw", "grpo_balanced", "grpo_hard_only"], "Model keys evaluated (checkpoints/<key>).")
    limit: int | None = setting(None, "Evaluate only the first N facts (quick checks).")
    n_boot: int = setting(1000, "Bootstrap resamples for the 95% intervals.")

    def __post_init__(self):
        one_of("split", self.split, _splits())
        _check_model_keys("models", self.models)


@dataclass
class CaseStudySettings(SeedField, RunFields):
    """``07_case_studies``: Figure 4 and error analysis."""

    profile: str = setting("toy", "Profile name (labels the figure).")
    split: str = setting("test", "Split of the cases.")
    models: list[str] = setting(["sft_label_full", "stage1", "grpo_progressive"], "Models compared (Figure 4's three).")
    sample_id: str | None = setting(None, "Figure 4's case; None = one where the models differ and MORE-R1's reasoning supports its answer.")
    n_teaching: int = setting(1, "Extra cases shown per pattern.")
    max_chars: int = setting(1400, "Characters of each output shown.")

    def __post_init__(self):
        one_of("split", self.split, _splits())
        _check_model_keys("models", self.models)


class Sections(Mapping):
    """Profile section -> settings class, in profile order. The training sections' classes are
    TRL configs, imported from ``morelib.training_settings`` the first time one is asked for, so
    that a process that never trains does not import TRL."""

    def __init__(self, classes: dict[str, "type | str"]):
        self._classes = dict(classes)  # a class, or the name of one in morelib.training_settings

    def __getitem__(self, section: str) -> type:
        cls = self._classes[section]
        if isinstance(cls, str):
            cls = self._classes[section] = getattr(importlib.import_module("morelib.training_settings"), cls)
        return cls

    def __contains__(self, section: object) -> bool:  # Mapping's own would import the class
        return section in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def is_imported(self, section: str) -> bool:
        """Whether asking for ``section``'s class costs no import (the training sections' do, once)."""
        return not isinstance(self._classes[section], str)


# Notebook sections are named by the notebook's stem.
SECTIONS = Sections({
    "common": CommonSettings,
    "inference": GenerationSettings,
    "00_prepare": PrepareSettings,
    "01_annotation": AnnotationSettings,
    "02_filtering": FilteringSettings,
    "03_sft": "SFTSettings",
    "04_difficulty": DifficultySettings,
    "05_grpo": "GRPOSettings",
    "06_evaluation": EvaluationSettings,
    "07_case_studies": CaseStudySettings,
})
DERIVED: dict[str, tuple[str, ...]] = {"03_sft": SFT_DERIVED, "05_grpo": GRPO_DERIVED}


def field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls) if f.init}


# TRL fields whose value is a choice of this reproduction, not the paper's: TRL's own help says
# what the field does, this says what we chose and why. help_text appends it.
TRL_CHOICES: dict[str, dict[str, str]] = {
    "GRPOSettings": {
        "vllm_importance_sampling_correction": (
            "This reproduction: off in every profile (inferred: the paper states nothing). TRL's default is on; "
            "off keeps the plain GRPO objective the paper writes (Algorithm 1), with no reweighting of tokens by "
            "the trainer/vLLM probability ratio. It acts only with use_vllm."),
        "mask_truncated_completions": (
            "This reproduction: off (inferred: the paper states nothing; TRL's default). A completion cut at "
            "max_completion_length still counts in the loss and earns no format reward."),
        "use_vllm": "This reproduction: on for the paper profile (inferred: the paper names vLLM only for inference).",
        "vllm_mode": (
            "This reproduction: colocate (inferred: the paper does not say how rollouts were generated; "
            "colocated vLLM needs no extra GPU for a server)."),
        "lora_dropout": (
            "It stays active while TRL computes the policy's log-probabilities (the model is in training mode), "
            "so old and new log-probs carry dropout noise; the paper states nothing (inferred)."),
        "deepspeed_config": (
            "Which DeepSpeed stage is our choice (inferred: the paper names none): the paper profile uses ZeRO-3 "
            "for GRPO (fp32 master weights) and ZeRO-2 for SFT."),
    },
    "SFTSettings": {
        "deepspeed_config": (
            "Which DeepSpeed stage is our choice (inferred: the paper names none): the paper profile uses ZeRO-2 "
            "for SFT and ZeRO-3 for GRPO."),
    },
}


def help_text(cls: type, name: str) -> str:
    """The documented meaning of one field (TRL's own help for TRL fields), with this reproduction's
    choice where it made one (``TRL_CHOICES``)."""
    for f in fields(cls):
        if f.name == name:
            choice = next((notes[name] for klass in cls.__mro__
                           if name in (notes := TRL_CHOICES.get(klass.__name__, {}))), "")
            return " ".join(part for part in (f.metadata.get("help", ""), choice) if part)
    raise KeyError(name)

