"""Qwen2.5-VL image-token arithmetic, and the runtime check that guards GRPO's vLLM path.

How many tokens an image costs: the processor resizes it so that both sides are multiples of
28 (patch 14 x merge 2) and its area lies within ``[min_pixels, max_pixels]``, keeping the
aspect ratio as far as it can; the vision tower then cuts 14x14 patches and merges 2x2 of them
into one LLM token. So an image costs one token per 28x28 block of its resized size:
``(resized_height / 28) * (resized_width / 28)``.

These are plain functions so that ``morelib.preflight`` can count the tokens of every sample
from image headers alone (no decoding), and so that the GRPO trainer can check, batch by batch,
that the image tokens in a prompt are the number the processor computes for its images
(:class:`ImageTokenGuard`; see ``docs/gpu.md``, "TRL issue 6401").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

PATCH_SIZE = 14
MERGE_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # pixels per side of one LLM image token
MAX_ASPECT_RATIO = 200  # the processor refuses images more elongated than this


class ImageTokenMismatch(ValueError):
    """The image tokens of a prompt disagree with what the processor computes for its images."""


def resized_size(width: int, height: int, *, min_pixels: int, max_pixels: int,
                 factor: int = FACTOR) -> tuple[int, int]:
    """``(width, height)`` after the processor's resize: multiples of ``factor``, area within the limits.

    Each side is first rounded to the nearest multiple of ``factor``. If the area is then above
    ``max_pixels``, both sides shrink by the same ratio and round down; if below ``min_pixels``,
    they grow and round up. Raises ``ValueError`` for an image the processor would refuse.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}x{height}: both sides must be at least 1 pixel")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(f"image size {width}x{height}: aspect ratio above {MAX_ASPECT_RATIO}, "
                         "which the Qwen2.5-VL processor refuses")
    new_w = round(width / factor) * factor
    new_h = round(height / factor) * factor
    if new_w * new_h > max_pixels:
        scale = math.sqrt(width * height / max_pixels)
        new_w = max(factor, math.floor(width / scale / factor) * factor)
        new_h = max(factor, math.floor(height / scale / factor) * factor)
    elif new_w * new_h < min_pixels:
        scale = math.sqrt(min_pixels / (width * height))
        new_w = math.ceil(width * scale / factor) * factor
        new_h = math.ceil(height * scale / factor) * factor
    return new_w, new_h


def image_grid(width: int, height: int, *, min_pixels: int, max_pixels: int) -> tuple[int, int, int]:
    """The processor's ``image_grid_thw`` row for one still image: ``(1, patch rows, patch columns)``."""
    new_w, new_h = resized_size(width, height, min_pixels=min_pixels, max_pixels=max_pixels)
    return 1, new_h // PATCH_SIZE, new_w // PATCH_SIZE


def image_tokens(width: int, height: int, *, min_pixels: int, max_pixels: int) -> int:
    """LLM tokens one image of ``width`` x ``height`` pixels becomes (its ``<|image_pad|>`` run)."""
    new_w, new_h = resized_size(width, height, min_pixels=min_pixels, max_pixels=max_pixels)
    return (new_w // FACTOR) * (new_h // FACTOR)


def grid_tokens(grid_thw: Sequence[int], merge_size: int = MERGE_SIZE) -> int:
    """Tokens of one image from its ``image_grid_thw`` row (what the HF processor expanded)."""
    t, h, w = (int(v) for v in grid_thw)
    return t * h * w // (merge_size * merge_size)


def max_tokens_per_image(max_pixels: int) -> int:
    """The most tokens any image can cost under ``max_pixels`` (one per 28x28 block)."""
    return max_pixels // (FACTOR * FACTOR)


# ----------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class PixelLimits:
    """The resize limits one pipeline applies (the same values must reach every pipeline)."""

    min_pixels: int
    max_pixels: int

    def __post_init__(self):
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"pixel limits: need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")

    def tokens(self, width: int, height: int) -> int:
        return image_tokens(width, height, min_pixels=self.min_pixels, max_pixels=self.max_pixels)


def processor_limits(processor) -> PixelLimits:
    """The limits a (image) processor applies, read from its ``size`` (``shortest_edge``/``longest_edge``
    are areas in pixels for Qwen2-VL-style processors, whatever their names say)."""
    image_processor = getattr(processor, "image_processor", processor)
    size = image_processor.size
    get = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    low, high = get("shortest_edge"), get("longest_edge")
    if low is None or high is None:
        raise ValueError(f"{type(image_processor).__name__}.size has no shortest_edge/longest_edge: {size}")
    return PixelLimits(int(low), int(high))


# ----------------------------------------------------------------------------- images on disk


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the file's header; PIL does not decode the pixels for this."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def crop_size(width: int, height: int, box) -> tuple[int, int]:
    """``(width, height)`` of the object crop ``morelib.data.crop_object`` cuts from such an image."""
    from morelib.data import box_to_pixels

    left, top, right, bottom = box_to_pixels(box, width, height)
    return right - left, bottom - top


def sample_image_sizes(sample, sizes_cache: dict | None = None) -> tuple[tuple[int, int], tuple[int, int]]:
    """Sizes of the two images a sample's prompt holds: (full image, object crop)."""
    cache = sizes_cache if sizes_cache is not None else {}
    path = Path(sample.image_path)
    if path not in cache:
        cache[path] = image_size(path)
    full = cache[path]
    return full, crop_size(*full, sample.box)


# ----------------------------------------------------------------------------- the 6401 guard


def image_token_runs(ids: Sequence[int], image_token_id: int) -> list[int]:
    """Lengths of the runs of ``image_token_id`` in ``ids``, in order (one run per image)."""
    runs: list[int] = []
    previous = None
    for token in ids:
        token = int(token)
        if token == image_token_id:
            if previous == image_token_id:
                runs[-1] += 1
            else:
                runs.append(1)
        previous = token
    return runs


def _sizes_of(images) -> list[tuple[int, int] | None]:
    return [None if image is None else tuple(getattr(image, "size", image)) for image in images]


def check_image_tokens(
    prompt_ids: Sequence[Sequence[int]],
    image_token_id: int,
    images: Sequence[Sequence | None] | None = None,
    image_grid_thw=None,
    limits: PixelLimits | None = None,
    merge_size: int = MERGE_SIZE,
) -> int:
    """Check that each prompt's image-token runs are what the processor computes for its images.

    ``prompt_ids``: one token list per prompt, image tokens expanded (as TRL's GRPO sends them to
    vLLM). ``images``: per prompt, its images (PIL images or ``(width, height)``), or None.
    ``image_grid_thw``: the HF processor's grid rows for all images of the batch, in order.
    ``limits``: the pixel limits the *other* pipeline (vLLM) applies; with ``images`` given, each
    run must equal the tokens those limits give. Returns the number of images checked; raises
    :class:`ImageTokenMismatch` naming the prompt, the image, both counts and the limits.
    """
    grid_rows = [] if image_grid_thw is None else [list(map(int, row)) for row in _rows(image_grid_thw)]
    if images is not None and len(images) != len(prompt_ids):
        raise ImageTokenMismatch(f"{len(prompt_ids)} prompts but {len(images)} image lists")
    if images is not None and limits is None:
        raise ValueError("check_image_tokens: images given without the pixel limits to check them against")
    grid_index = 0
    checked = 0
    for index, ids in enumerate(prompt_ids):
        runs = image_token_runs(ids, image_token_id)
        prompt_images = None if images is None else _sizes_of(images[index] or [])
        if prompt_images is not None and len(runs) != len(prompt_images):
            raise ImageTokenMismatch(
                f"prompt {index}: {len(runs)} runs of image tokens for {len(prompt_images)} images; "
                "each image must have exactly one run (TRL issue 6401: do not train on this prompt)")
        for image_index, run in enumerate(runs):
            if grid_rows:
                if grid_index >= len(grid_rows):
                    raise ImageTokenMismatch(f"prompt {index}: more image-token runs than image_grid_thw rows "
                                             f"({len(grid_rows)})")
                expected = grid_tokens(grid_rows[grid_index], merge_size)
                if run != expected:
                    raise ImageTokenMismatch(
                        f"prompt {index}, image {image_index}: {run} image tokens in the prompt ids but the "
                        f"processor's grid {tuple(grid_rows[grid_index])} gives {expected}")
                grid_index += 1
            if prompt_images is not None:
                width, height = prompt_images[image_index]
                expected = limits.tokens(width, height)
                if run != expected:
                    raise ImageTokenMismatch(
                        f"prompt {index}, image {image_index} ({width}x{height}): {run} image tokens in the prompt "
                        f"ids but {expected} for min_pixels={limits.min_pixels}, max_pixels={limits.max_pixels}: "
                        "the trainer's processor and vLLM would expand this image differently (TRL issue 6401); "
                        "give both the same pixel limits, or use vllm_mode=server or transformers rollouts")
            checked += 1
    if grid_rows and grid_index != len(grid_rows):
        raise ImageTokenMismatch(f"{len(grid_rows)} image_grid_thw rows but {grid_index} image-token runs in the prompts")
    return checked


def _rows(grid):
    return grid.tolist() if hasattr(grid, "tolist") else list(grid)


class ImageTokenGuard:
    """Runs :func:`check_image_tokens` on the first batch and every ``every``-th batch after it.

    Build it with the limits vLLM will apply (those saved in the model's processor files) and
    call it with what the trainer hands to generation::

        guard = ImageTokenGuard.for_processor(processor, every=settings.image_token_check_every)
        guard(prompt_ids, images, multimodal_fields.get("image_grid_thw"))

    ``every=0`` turns it off. ``calls`` and ``checks`` count what it did.
    """

    def __init__(self, image_token_id: int, limits: PixelLimits, every: int = 1, merge_size: int = MERGE_SIZE):
        if every < 0:
            raise ValueError(f"every={every}: must be 0 (off) or a positive number of batches")
        self.image_token_id = image_token_id
        self.limits = limits
        self.every = every
        self.merge_size = merge_size
        self.calls = 0
        self.checks = 0

    @classmethod
    def for_processor(cls, processor, every: int = 1, limits: PixelLimits | None = None) -> "ImageTokenGuard":
        image_processor = getattr(processor, "image_processor", processor)
        return cls(processor.image_token_id, limits or processor_limits(processor), every,
                   getattr(image_processor, "merge_size", MERGE_SIZE))

    def __call__(self, prompt_ids, images=None, image_grid_thw=None) -> bool:
        """Check this batch if it is due; returns whether it was checked."""
        due = self.every > 0 and self.calls % self.every == 0
        self.calls += 1
        if not due or (images is None and image_grid_thw is None):
            return False
        check_image_tokens(prompt_ids, self.image_token_id, images, image_grid_thw, self.limits, self.merge_size)
        self.checks += 1
        return True


def with_image_token_guard(trainer_cls):
    """A subclass of TRL 1.16's ``GRPOTrainer`` (or a subclass of it) that runs ``self.image_token_guard``
    on every batch of tokenized prompts, before generation (vLLM or transformers).

    TRL tokenizes the prompts of a batch in ``_tokenize_prompts`` and hands the result to
    generation; so the check sees the ids the trainer scores and the images vLLM gets
    (``morelib.rollouts`` then collapses each image run for colocated vLLM and checks the ids vLLM
    returns). Set the guard after building::

        trainer = with_image_token_guard(GRPOTrainer)(model=..., args=..., processing_class=processor)
        trainer.image_token_guard = ImageTokenGuard.for_processor(vllm_side_processor, every=N)

    Without a guard set, the subclass behaves exactly like the parent.
    """
    if not hasattr(trainer_cls, "_tokenize_prompts"):
        raise TypeError(f"{trainer_cls.__name__} has no _tokenize_prompts: the guard needs TRL 1.16's GRPOTrainer")

    class Guarded(trainer_cls):
        image_token_guard: ImageTokenGuard | None = None

        def _tokenize_prompts(self, prompts):
            prompt_ids, images, fields = super()._tokenize_prompts(prompts)
            if self.image_token_guard is not None:
                self.image_token_guard(prompt_ids, images, fields.get("image_grid_thw"))
            return prompt_ids, images, fields

    Guarded.__name__ = Guarded.__qualname__ = f"ImageTokenGuarded{trainer_cls.__name__}"
    return Guarded
