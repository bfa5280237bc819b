"""Token lengths: what one sample costs the model, counted as the trainer and the engines see it.

The chat template and the student prompt by the real tokenizer (each distinct text tokenized
once), both images (full image and object crop) by the processor's own arithmetic in
:mod:`morelib.vision_tokens`, from the image headers only, and the completion rendered as TRL
renders a prompt-completion row. The pre-flight (:mod:`morelib.preflight`) checks these counts
against each stage's limit; the SFT over-length policy (:mod:`morelib.overlong`) drops by them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from morelib.vision_tokens import PixelLimits, sample_image_sizes


@dataclass(frozen=True)
class TokenCount:
    """What one sample costs: text of prompt and template, each image, and the completion."""

    id: str
    text_tokens: int                 # chat template + prompt text, without the image placeholders
    image_tokens: tuple[int, ...]    # per image, in prompt order
    completion_tokens: int | None = None
    error: str | None = None         # the sample cannot be processed at all (e.g. a degenerate crop)

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + sum(self.image_tokens)

    def total(self, budget: int | None = None) -> int:
        """Prompt plus the completion, or plus ``budget`` when the completion is not known."""
        completion = self.completion_tokens if self.completion_tokens is not None else (budget or 0)
        return self.prompt_tokens + completion


class TokenLengths:
    """Token lengths of texts, each distinct text tokenized once (in batches)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[str, int] = {}

    def lengths(self, texts: Sequence[str]) -> list[int]:
        todo = sorted({t for t in texts if t not in self.cache})
        for start in range(0, len(todo), 1024):
            chunk = todo[start:start + 1024]
            ids = self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
            self.cache.update({text: len(row) for text, row in zip(chunk, ids)})
        return [self.cache[t] for t in texts]

    def count(self, text: str, token_id: int) -> int:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"].count(token_id)


def completion_renderer(processor, prompt: list[dict]) -> Callable[[str], str]:
    """``text -> completion text`` exactly as TRL renders a prompt-completion row: the full
    conversation's chat template minus the prompt's (with the generation prompt)."""
    from morelib.prompts import assistant_turn

    sentinel = "\x00COMPLETION\x00"
    prompt_text = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(prompt + assistant_turn(sentinel), tokenize=False)
    if not full.startswith(prompt_text) or full.count(sentinel) != 1:
        raise ValueError("the chat template does not render a completion after the prompt; cannot count it")
    before, after = full[len(prompt_text):].split(sentinel)
    return lambda text: before + text + after


def count_tokens(
    samples: Sequence,
    processor,
    limits: PixelLimits,
    completions: Mapping[str, str] | None = None,
    prompt_fn: Callable[[Any], list[dict]] | None = None,
    sizes_cache: dict | None = None,
    tokens: TokenLengths | None = None,
) -> list[TokenCount]:
    """The token count of each sample's prompt (template, text, images) and completion.

    ``limits``: the pixel limits every pipeline applies. ``completions``: id -> completion text
    (rows without one get ``completion_tokens=None``). ``prompt_fn``: sample -> messages (default:
    the reasoning student prompt). Images are measured from their headers only.
    """
    from morelib.prompts import student_prompt

    prompt_fn = prompt_fn or student_prompt
    tokens = tokens or TokenLengths(processor.tokenizer)
    image_token_id = processor.image_token_id
    sizes_cache = {} if sizes_cache is None else sizes_cache
    completions = completions or {}

    prompts = [prompt_fn(sample) for sample in samples]
    texts = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    text_lengths = tokens.lengths(texts)
    placeholders: dict[str, int] = {}  # per distinct prompt text: image placeholders in it
    render = completion_renderer(processor, prompts[0]) if completions and prompts else None
    completion_texts = [render(completions[s.id]) if s.id in completions else None for s in samples]
    completion_lengths = tokens.lengths([t for t in completion_texts if t is not None])
    completion_iter = iter(completion_lengths)

    counts = []
    for sample, prompt, text, length, completion in zip(samples, prompts, texts, text_lengths, completion_texts):
        n_images = sum(1 for m in prompt for part in (m["content"] if isinstance(m["content"], list) else [])
                       if part.get("type") == "image")
        if text not in placeholders:
            placeholders[text] = tokens.count(text, image_token_id)
        if placeholders[text] != n_images:
            raise ValueError(f"sample {sample.id}: the rendered prompt holds {placeholders[text]} image placeholders "
                             f"for {n_images} images")
        completion_tokens = next(completion_iter) if completion is not None else None
        try:
            image_tokens = tuple(limits.tokens(*size) for size in sample_image_sizes(sample, sizes_cache)[:n_images])
            error = None
        except (ValueError, OSError) as problem:  # a crop the processor refuses, an unreadable image
            image_tokens, error = (), f"{sample.image_path}: {problem}"
        counts.append(TokenCount(sample.id, length - placeholders[text], image_tokens, completion_tokens, error))
    return counts


