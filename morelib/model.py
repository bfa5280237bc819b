"""One model loader for every stage: Qwen2.5-VL (tiny or 7B) with the vision tower frozen.

``load_model(path)`` reads a local directory or a hub id with the same code, so the toy's tiny
model and ``Qwen/Qwen2.5-VL-7B-Instruct`` go through one path. The processor is built image-only
(no video processor) because transformers cannot build the video half without torchvision.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from morelib import attention

# Linear layers of the language model only: the regex cannot match anything under
# ``model.visual`` (vision blocks, merger) or the embeddings / lm_head.
LLM_LINEAR_REGEX = r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"


@dataclass
class LoraSettings:
    """LoRA on the LLM's linear layers (peft)."""

    r: int = 8
    """Rank of the update matrices."""
    alpha: int = 32
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: str = LLM_LINEAR_REGEX
    """Regex (full match on module names) of the layers that get adapters; LLM only by default."""
    extra: dict = field(default_factory=dict)
    """Further ``peft.LoraConfig`` keyword arguments."""


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        # bf16 where the hardware does it natively (the paper trains in bf16); fp32 on CPU.
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype in ("float32", "fp32"):
        return torch.float32
    if dtype in ("bfloat16", "bf16"):
        return torch.bfloat16
    if dtype in ("float16", "fp16"):
        return torch.float16
    raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {dtype!r}")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _adapter_base(path: str | Path) -> str | None:
    """The base model of a peft adapter directory, or None when ``path`` is a full model."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text())["base_model_name_or_path"]


@functools.cache
def image_only_processor_class():
    """Qwen2.5-VL's processor without the video half (which needs torchvision to build)."""
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = "<|image_pad|>"
            self.video_token = "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            # Skip the parent's __init__, which insists on a video processor.
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    # Saved checkpoints then name the release's class, so AutoProcessor reads them where
    # torchvision is installed (GPU servers), exactly as it reads Qwen2.5-VL-7B-Instruct.
    ImageOnlyQwen2_5_VLProcessor.__name__ = "Qwen2_5_VLProcessor"
    return ImageOnlyQwen2_5_VLProcessor


def load_processor(
    path: str | Path,
    padding_side: str = "left",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """The Qwen2.5-VL processor, image-only, for a local directory or a hub id.

    Works without torchvision: the image processor is the PIL one, and no video processor is
    built. Left padding, because batched generation needs the prompts to end at the same column.

    ``min_pixels`` / ``max_pixels`` bound the area of each image after resizing (one token per
    28x28 pixels); None keeps the model's own value. They are stored in the image processor's
    ``size``, which is what both the PIL and the torchvision (fast) processor read, and what
    ``save_pretrained`` writes: a checkpoint saved from this processor carries the limits to every
    later reader, vLLM included.
    """
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = str(check_model_path(path))
    if _adapter_base(path) and not Path(path, "tokenizer_config.json").is_file():
        path = str(check_model_path(_adapter_base(path)))
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side=padding_side)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
    set_pixel_limits(image_processor, min_pixels, max_pixels)
    chat_template = tokenizer.chat_template or _read_chat_template(path)
    processor_class = image_only_processor_class()
    return processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)


def set_pixel_limits(image_processor, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
    """Set a Qwen2-VL image processor's resize limits (areas in pixels); None keeps the current one.

    transformers 5.17 keeps them in ``size`` as ``shortest_edge`` (min area) and ``longest_edge``
    (max area), in the PIL and the fast class alike. They are set on the instance: passing
    ``min_pixels``/``max_pixels`` to the constructor without ``size`` would change the class's
    shared default ``size`` dict for every later instance.
    """
    from transformers.image_processing_utils import SizeDict

    if min_pixels is None and max_pixels is None:
        return
    size = image_processor.size
    low = min_pixels if min_pixels is not None else size["shortest_edge"]
    high = max_pixels if max_pixels is not None else size["longest_edge"]
    if not 0 < low <= high:
        raise ValueError(f"pixel limits: need 0 < min_pixels <= max_pixels, got min_pixels={low}, max_pixels={high}")
    image_processor.size = SizeDict(shortest_edge=int(low), longest_edge=int(high))


# A hub id is "name" or "namespace/name" (letters, digits, '-', '_', '.'); anything else is a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


# Folders of a run directory (morelib.layout) that hold models: a path starting with one is local.
LOCAL_FOLDERS = ("runs", "checkpoints", "models")


def check_model_path(path: str | Path) -> str | Path:
    """``path`` itself when it is an existing directory or looks like a hub id; else FileNotFoundError.

    Without this, a missing local directory reaches the hub client, whose error says the path is
    a malformed repo id.
    """
    text = str(path)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise NotADirectoryError(f"model path {text}: not a directory (expected a Hugging Face model directory)")
        return path
    # "checkpoints/stage1" has the shape of a hub id too: it is a local path when its first part
    # is a folder of a run directory, or its parent folder exists here.
    first = Path(text).parts[0] if Path(text).parts else ""
    looks_local = first in LOCAL_FOLDERS or (len(Path(text).parts) > 1 and local.parent.is_dir())
    if _HUB_ID.match(text) and not text.startswith((".", "~")) and not looks_local:
        return path
    raise FileNotFoundError(f"model path {text}: no such directory ({local.resolve()}); "
                            f"not a hub id such as 'Qwen/Qwen2.5-VL-7B-Instruct' either")


def damaged_weights(path: str | Path) -> str | None:
    """``"FILE: cannot read ..."`` for the first weights file of a local model directory that
    safetensors cannot open (cut short by a kill or a copy), else None. Loaders' own errors
    ("incomplete metadata") do not name the file."""
    from safetensors import safe_open

    folder = Path(path)
    if not folder.is_dir():
        return None
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as weights:
                weights.keys()
        except Exception as error:  # safetensors raises its own error types
            return (f"{file}: cannot read the weights ({type(error).__name__}: {error}); the file is damaged or "
                    "cut short: copy it again, or delete the model's folder to train it again")
    return None


def _read_chat_template(path: str) -> str | None:
    """Chat template stored beside the tokenizer (``chat_template.jinja`` or ``chat_template.json``)."""
    local = Path(path)
    if local.is_dir():
        if (local / "chat_template.jinja").is_file():
            return (local / "chat_template.jinja").read_text()
        if (local / "chat_template.json").is_file():
            return json.loads((local / "chat_template.json").read_text())["chat_template"]
        return None
    from huggingface_hub import hf_hub_download

    for name in ("chat_template.jinja", "chat_template.json"):
        try:
            file = hf_hub_download(path, name)
        except Exception:  # not in this repo: try the next name
            continue
        text = Path(file).read_text()
        return text if name.endswith(".jinja") else json.loads(text)["chat_template"]
    return None


def resolve_attn_implementation(setting: str = "auto", tag: str = "model", cuda: bool | None = None,
                                has_flash_attn: bool | None = None) -> str:
    """The attention kernel for a setting (``morelib.settings.ATTN_IMPLEMENTATIONS``).

    ``auto``: ``flash_attention_2`` on a GPU where the flash-attn package is installed; else
    ``sdpa``, with one warning line on a GPU (printed by the first process only): under sdpa,
    transformers 5.17 runs Qwen2.5-VL's vision window attention as one small call per window.
    On a CPU, ``sdpa_gqa`` (``morelib.attention``): sdpa that generates without copying the shared
    key/value heads.
    """
    if setting != "auto":
        return setting
    import importlib.util
    import os

    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return attention.NAME
    if has_flash_attn is None:
        has_flash_attn = importlib.util.find_spec("flash_attn") is not None
    if has_flash_attn:
        return "flash_attention_2"
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(f"[{tag}] warning: flash-attn is not installed, so attention runs as sdpa (slower, above all in the "
              "vision tower); install it as docs/gpu.md says, or set attn_implementation: sdpa", flush=True)
    return "sdpa"


def vision_without_grad(model) -> bool:
    """Run a frozen vision tower (encoder and merger) under ``torch.no_grad``; returns whether it did.

    With LoRA and gradient checkpointing, TRL calls ``enable_input_require_grads()``, which in
    transformers 5.17 hooks every input embedding, the vision tower's ``patch_embed`` included: the
    frozen tower's activations then require grad, so it is recomputed and back-propagated every
    step for nothing. Its output takes no gradient anyway (no trainable parameter is below it), so
    the loss and every gradient stay the same. A tower with a trainable parameter is left alone.
    """
    import functools

    import torch

    visual = vision_module(model)
    if any(param.requires_grad for param in visual.parameters()):
        return False
    if getattr(visual, "_runs_without_grad", False):
        return True
    forward = visual.forward

    @functools.wraps(forward)
    def forward_without_grad(*args, **kwargs):
        # Checkpointing has nothing to save under no_grad; off, it does not warn every step either.
        for module in visual.modules():
            if getattr(module, "gradient_checkpointing", False):
                module.gradient_checkpointing = False
        with torch.no_grad():
            return forward(*args, **kwargs)

    visual.forward = forward_without_grad
    visual._runs_without_grad = True
    return True


def freeze_vision_tower(model) -> None:
    """Freeze the vision encoder and the projector (merger); both live under ``model.model.visual``."""
    for param in vision_module(model).parameters():
        param.requires_grad_(False)


def vision_module(model):
    """The vision tower incl. the merger, through a peft wrapper if there is one."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model.visual


def apply_lora(model, lora: LoraSettings):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
        **lora.extra,
    )
    return get_peft_model(model, config)


def load_model(
    path_or_hub_id: str | Path,
    dtype: str = "auto",
    device: str | None = None,
    lora: LoraSettings | None = None,
    freeze_vision: bool = True,
    attn_implementation: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """Load a Qwen2.5-VL checkpoint and its processor; returns ``(model, processor)``.

    ``path_or_hub_id`` may be a full model or a peft adapter directory (merged into its base on
    load). ``freeze_vision`` freezes the vision encoder and projector, as the paper does in both
    stages. ``lora`` adds fresh LoRA adapters to the LLM's linear layers only. ``min_pixels`` /
    ``max_pixels`` go to :func:`load_processor`.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    kwargs = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if attn_implementation == attention.NAME:
        attention.register()  # ours, not transformers': known in this process only once registered

    check_model_path(path_or_hub_id)
    base = _adapter_base(path_or_hub_id)
    if base:
        check_model_path(base)
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base or str(path_or_hub_id), **kwargs)
        if base:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(path_or_hub_id)).merge_and_unload()
    except Exception:
        broken = damaged_weights(path_or_hub_id) or (damaged_weights(base) if base else None)
        if broken is None:
            raise
        raise OSError(broken) from None
    model.to(device)
    processor = load_processor(path_or_hub_id, min_pixels=min_pixels, max_pixels=max_pixels)

    if freeze_vision:
        freeze_vision_tower(model)
    if lora is not None:
        model = apply_lora(model, lora)
        if not freeze_vision:
            # peft freezes everything but the adapters; give the vision tower back its gradients.
            for param in vision_module(model).parameters():
                param.requires_grad_(True)
    return model, processor
