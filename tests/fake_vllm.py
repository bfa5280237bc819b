"""A stand-in for the parts of vLLM 0.31 that TRL 1.16's colocated GRPO engine touches, on CPU.

What matters is the multimodal prompt update for Qwen2.5-VL token prompts, written here from
reading vLLM 0.31 (``vllm/multimodal/processing/processor.py``, ``_apply_matches``, and the
Qwen2-VL processor's ``_get_prompt_updates``): a token prompt is taken as unexpanded; for each
image in turn, the next single ``<|image_pad|>`` at or after the end of the previous match is
replaced by that image's run (one pad per 28x28 block after the processor's resize, with the
engine's pixel limits); the rest of the prompt is kept as it is. The prompt ids a request
returns are the updated ones. Generation itself returns a fixed short completion.

``install(monkeypatch)`` puts the module under ``sys.modules["vllm"]`` and under the names TRL's
``vllm_generation`` module imported at load time (vLLM is not installed on CPU machines).
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field


class FakeLLM:
    built: list["FakeLLM"] = []

    def __init__(self, model: str, **kwargs):
        from morelib.model import load_processor
        from morelib.vision_tokens import PixelLimits, processor_limits

        self.model = model
        self.kwargs = kwargs
        processor = load_processor(model)
        self.image_token_id = processor.image_token_id
        self.eos_token_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        own = processor_limits(processor)
        pixels = kwargs.get("mm_processor_kwargs") or {}
        self.limits = PixelLimits(pixels.get("min_pixels", own.min_pixels), pixels.get("max_pixels", own.max_pixels))
        self.requests: list[dict] = []
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=types.SimpleNamespace(
            model_runner=types.SimpleNamespace(model=types.SimpleNamespace(load_weights=lambda weights: None)))))
        FakeLLM.built.append(self)

    def reset_prefix_cache(self):
        pass

    def expand(self, ids: list[int], images: list) -> list[int]:
        """vLLM's replacement of each image's placeholder in a token prompt."""
        out, cursor = [], 0
        for image in images:
            try:
                match = ids.index(self.image_token_id, cursor)
            except ValueError:
                raise RuntimeError("Expected there to be 1 prompt updates corresponding to 1 image items") from None
            out += ids[cursor:match] + [self.image_token_id] * self.limits.tokens(*image.size)
            cursor = match + 1
        return out + ids[cursor:]

    def generate(self, prompts, sampling_params=None, use_tqdm=False):
        outputs = []
        for prompt in prompts:
            images = (prompt.get("multi_modal_data") or {}).get("image", [])
            images = images if isinstance(images, list) else [images]
            limit = (self.kwargs.get("limit_mm_per_prompt") or {}).get("image")
            if limit is not None and len(images) > limit:
                raise ValueError(f"At most {limit} image(s) may be provided in one prompt")
            ids = self.expand(list(prompt["prompt_token_ids"]), images)
            max_len = self.kwargs.get("max_model_len")
            if max_len is not None and len(ids) + 2 > max_len:
                raise ValueError(f"The decoder prompt (length {len(ids)}) is longer than the maximum model length of {max_len}")
            self.requests.append({"sent": list(prompt["prompt_token_ids"]), "expanded": ids})
            completion = [self.image_token_id + 1, self.eos_token_id]
            logprobs = [{token: Logprob(-1.0, 1)} for token in completion]
            outputs.append(RequestOutput(ids, [CompletionOutput(completion, logprobs)]))
        return outputs


@dataclass
class Logprob:
    logprob: float
    rank: int


@dataclass
class CompletionOutput:
    token_ids: list[int]
    logprobs: list[dict] = field(default_factory=list)


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class StructuredOutputsParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def install(monkeypatch):
    """Make TRL 1.16 believe vLLM is installed and use this module; undone by ``monkeypatch``."""
    import trl.generation.vllm_generation as trl_vllm

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams, module.RequestOutput = FakeLLM, SamplingParams, RequestOutput
    monkeypatch.setitem(sys.modules, "vllm", module)
    for name, value in (("LLM", FakeLLM), ("SamplingParams", SamplingParams), ("RequestOutput", RequestOutput),
                        ("StructuredOutputsParams", StructuredOutputsParams), ("is_vllm_available", lambda *a, **k: True)):
        monkeypatch.setattr(trl_vllm, name, value, raising=False)
    # TRL's colocate mode writes these for vLLM's distributed start; keep them out of later tests.
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", "29555")):
        monkeypatch.setenv(name, value)
    FakeLLM.built = []
    return FakeLLM
