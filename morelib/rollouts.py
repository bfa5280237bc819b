"""GRPO rollouts on TRL 1.16's vLLM engine: the prompts vLLM gets, the ids it returns, its settings.

TRL 1.16's colocated engine (``trl.generation.vllm_generation.VLLMGeneration``) sends vLLM the
trainer's prompt ids, in which the processor has already expanded every ``<|image_pad|>`` into one
token per 28x28 block, together with the raw images. vLLM treats a token prompt as unexpanded and
applies Qwen2.5-VL's own replacement: for each image in turn, the next single ``<|image_pad|>``
after the previous match becomes that image's whole run. On expanded ids, image 0 replaces the
first pad of its own run, image 1 the second pad of the same run, and the other pads stay: the
prompt vLLM generates from is longer by about the two images' token counts and no longer the
prompt GRPO scores (TRL issues 6294 and 6401; fixed upstream by TRL PR 6718, not in 1.16). TRL
throws away the prompt ids vLLM returns, so nothing notices.

:func:`with_vllm_rollouts` fixes this in a subclass of the trainer, without touching TRL's files:

- colocate mode: each image's run is collapsed to one placeholder before the ids go to vLLM
  (:func:`collapse_image_runs`), so vLLM expands every image once; the trainer keeps its
  expanded ids for the loss;
- both modes: on the first batch and every ``check_every``-th batch after it, the prompt ids vLLM
  returns must equal the trainer's expanded ids (:func:`check_returned_prompts`), or the run stops
  with :class:`VLLMPromptMismatch` naming the prompt, its image sizes and both lengths;
- colocate mode: TRL builds ``vllm.LLM(...)`` itself and passes none of our engine settings; the
  subclass adds them to that call (:func:`engine_kwargs`: two images and no video per prompt, the
  pixel limits, ``max_num_batched_tokens`` from the pre-flight).

Server mode (``trl vllm-serve``) needs no collapse: TRL 1.16 asks the server for the image
features alone and places them on the runs of the trainer's own ids (``docs/gpu.md``).
"""

from __future__ import annotations

import contextlib
from typing import Sequence

# Two images per prompt and no video: the same limit as the package's other vLLM engines.
from morelib.inference import LIMIT_MM_PER_PROMPT

# TRL 1.16 fixes this value in its LLM(...) call; the pre-flight derives ours and never goes below it.
TRL_MAX_NUM_BATCHED_TOKENS = 4096


class VLLMPromptMismatch(RuntimeError):
    """The prompt vLLM generated from is not the prompt the trainer scores."""


def collapse_image_runs(ids: Sequence[int], image_token_id: int) -> list[int]:
    """``ids`` with every run of ``image_token_id`` shortened to one token (the chat template's own
    ``<|vision_start|><|image_pad|><|vision_end|>``), which vLLM expands once per image."""
    out: list[int] = []
    for token in ids:
        token = int(token)
        if token == image_token_id and out and out[-1] == image_token_id:
            continue
        out.append(token)
    return out


def _image_sizes(images) -> str:
    if not images:
        return "no images"
    return ", ".join("x".join(map(str, getattr(image, "size", image))) for image in images)


def check_returned_prompts(expanded: Sequence[Sequence[int]], returned: Sequence[Sequence[int]],
                           images: Sequence | None, image_token_id: int) -> int:
    """Raise :class:`VLLMPromptMismatch` unless each prompt vLLM returns equals the trainer's
    expanded prompt; returns the number of prompts checked."""
    from morelib.vision_tokens import image_token_runs

    if len(expanded) != len(returned):
        raise VLLMPromptMismatch(f"vLLM returned {len(returned)} prompts for {len(expanded)} sent")
    for index, (ours, theirs) in enumerate(zip(expanded, returned)):
        ours, theirs = [int(t) for t in ours], [int(t) for t in theirs]
        if ours != theirs:
            prompt_images = images[index] if images is not None else None
            raise VLLMPromptMismatch(
                f"prompt {index} (images {_image_sizes(prompt_images)}): vLLM generated from {len(theirs)} prompt "
                f"tokens but the trainer scores {len(ours)}; image-token runs vLLM {image_token_runs(theirs, image_token_id)}, "
                f"trainer {image_token_runs(ours, image_token_id)}. The completions would be trained on another prompt "
                "than the one they were sampled from (TRL issues 6294/6401); check that vLLM and the trainer get the "
                "same pixel limits, or use use_vllm: false")
    return len(expanded)


def engine_kwargs(settings) -> dict:
    """What our ``vllm.LLM`` needs beyond TRL's arguments, from ``GRPOSettings``: two images and no
    video per prompt, the trainer's pixel limits and ``max_num_batched_tokens``."""
    kwargs: dict = {"limit_mm_per_prompt": dict(LIMIT_MM_PER_PROMPT)}
    pixels = {name: getattr(settings, name) for name in ("min_pixels", "max_pixels")
              if getattr(settings, name, None) is not None}
    if pixels:
        kwargs["mm_processor_kwargs"] = pixels
    batched = getattr(settings, "vllm_max_num_batched_tokens", None)
    if batched is not None:
        kwargs["max_num_batched_tokens"] = int(batched)
    return kwargs


@contextlib.contextmanager
def _replaced(module, name: str, value):
    """``module.name`` is ``value`` inside the block (TRL looks both names up at call time)."""
    missing = object()
    original = getattr(module, name, missing)
    setattr(module, name, value)
    try:
        yield original
    finally:
        if original is missing:
            delattr(module, name)
        else:
            setattr(module, name, original)


def generation_class(base=None):
    """A subclass of TRL's ``VLLMGeneration`` that sends unexpanded image placeholders (colocate),
    checks the prompt ids vLLM returns (both modes) and adds ``extra_engine_kwargs`` to ``LLM(...)``."""
    if base is None:
        from trl.generation.vllm_generation import VLLMGeneration as base

    class ExpandOnceVLLMGeneration(base):
        extra_engine_kwargs: dict = {}
        check_every: int = 1

        def __init__(self, *args, **kwargs):
            self.calls = 0
            self.checks = 0
            super().__init__(*args, **kwargs)

        def _init_vllm(self):
            if self.mode != "colocate" or not self.extra_engine_kwargs:
                return super()._init_vllm()
            import trl.generation.vllm_generation as trl_vllm

            original = getattr(trl_vllm, "LLM", None)
            if original is None:  # vLLM is not installed: TRL says so
                return super()._init_vllm()
            extra = dict(self.extra_engine_kwargs)

            def build(**kwargs):
                return original(**{**kwargs, **extra})

            with _replaced(trl_vllm, "LLM", build):
                return super()._init_vllm()

        def generate(self, prompts, images, num_generations, profiler=None):
            token = getattr(self.processing_class, "image_token_id", None)
            due = self.check_every > 0 and self.calls % self.check_every == 0
            self.calls += 1
            sent = prompts
            if self.mode == "colocate" and images is not None and token is not None:
                sent = [collapse_image_runs(ids, token) if imgs else list(ids) for ids, imgs in zip(prompts, images)]
            out = super().generate(sent, images, num_generations, profiler)
            if due and images is not None and token is not None:
                check_returned_prompts(prompts, out[0], images, token)
                self.checks += 1
            return out

    return ExpandOnceVLLMGeneration


def with_vllm_rollouts(trainer_cls, engine_options: dict | None = None, check_every: int = 1):
    """A subclass of TRL 1.16's ``GRPOTrainer`` (or a subclass of it) whose vLLM engine gets
    ``engine_options`` and whose rollouts use :func:`generation_class`. Without ``use_vllm`` it
    behaves exactly like the parent.

    TRL builds its ``VLLMGeneration`` inside ``GRPOTrainer.__init__`` by the name it imported; the
    subclass puts its own class under that name for the duration of that call only.
    """
    options, every = dict(engine_options or {}), int(check_every)
    if every < 0:
        raise ValueError(f"check_every={every}: must be 0 (off) or a positive number of batches")

    class VLLMRollouts(trainer_cls):
        def __init__(self, *args, **kwargs):
            import trl.trainer.grpo_trainer as grpo_trainer

            generation = generation_class(grpo_trainer.VLLMGeneration)
            generation.extra_engine_kwargs = options
            generation.check_every = every
            with _replaced(grpo_trainer, "VLLMGeneration", generation):
                super().__init__(*args, **kwargs)

    VLLMRollouts.__name__ = VLLMRollouts.__qualname__ = f"VLLMRollouts{trainer_cls.__name__}"
    return VLLMRollouts
