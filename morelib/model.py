"""One model loader for every stage: Qwen2.5-VL (tiny or 7B) with the vision tower frozen.

``load_model(path)`` reads a local directory or a hub id with the same code, so the toy's tiny
model and ``Qwen/Qwen2.5-VL-7B-Instruct`` go through one path. The processor is built image-only
(no video processor) because transformers cannot build the video half without torchvision.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

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


def load_processor(path: str | Path, padding_side: str = "left"):
    """The Qwen2.5-VL processor, image-only, for a local directory or a hub id.

    Works without torchvision: the image processor is the PIL one, and no video processor is
    built. Left padding, because batched generation needs the prompts to end at the same column.
    """
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = str(path)
    if _adapter_base(path) and not Path(path, "tokenizer_config.json").is_file():
        path = _adapter_base(path)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side=padding_side)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
    chat_template = tokenizer.chat_template or _read_chat_template(path)
    processor_class = image_only_processor_class()
    return processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)


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
):
    """Load a Qwen2.5-VL checkpoint and its processor; returns ``(model, processor)``.

    ``path_or_hub_id`` may be a full model or a peft adapter directory (merged into its base on
    load). ``freeze_vision`` freezes the vision encoder and projector, as the paper does in both
    stages. ``lora`` adds fresh LoRA adapters to the LLM's linear layers only.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    kwargs = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation

    base = _adapter_base(path_or_hub_id)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base or str(path_or_hub_id), **kwargs)
    if base:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path_or_hub_id)).merge_and_unload()
    model.to(device)
    processor = load_processor(path_or_hub_id)

    if freeze_vision:
        freeze_vision_tower(model)
    if lora is not None:
        model = apply_lora(model, lora)
        if not freeze_vision:
            # peft freezes everything but the adapters; give the vision tower back its gradients.
            for param in vision_module(model).parameters():
                param.requires_grad_(True)
    return model, processor
