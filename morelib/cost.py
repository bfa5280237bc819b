"""What an expert annotation run costs: an estimate before any call, the tally afterwards.

The estimate counts tokens without a tokenizer (none is installed and the expert's may be
unknown): text is ``ceil(chars / CHARS_PER_TOKEN)``, about right for English prose with
GPT-4o's tokenizer, plus a small per-message overhead. Images follow OpenAI's published
rule for GPT-4o:

- ``low`` detail: a flat 85 tokens;
- ``high`` (and ``auto``, counted as high to stay on the safe side): scale the image to fit
  2048 x 2048, then so that its short side is at most 768 px, then 85 + 170 per 512-px tile.

The gate (:func:`check_budget`) stops a run whose estimate is above ``cost_threshold`` before it
spends anything, unless ``confirm_cost`` is set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD_TOKENS = 7  # role markers and the reply primer of one chat request
LOW_DETAIL_TOKENS = 85
TILE_TOKENS = 170
TILE_PX = 512
MAX_SIDE_PX = 2048
SHORT_SIDE_PX = 768
DETAILS = ("low", "high", "auto")


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens; the defaults are GPT-4o's list prices."""

    input_per_m: float = 2.50
    output_per_m: float = 10.00
    batch_discount: float = 0.5  # the Batch API bills this fraction of the list price

    @classmethod
    def from_settings(cls, settings) -> "Prices":
        """The prices an annotation run was given (``price_input_per_m``, ``price_output_per_m``, ``batch_discount``)."""
        return cls(settings.price_input_per_m, settings.price_output_per_m, settings.batch_discount)

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        usd = (prompt_tokens * self.input_per_m + completion_tokens * self.output_per_m) / 1e6
        return usd * (self.batch_discount if batch else 1.0)


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def image_tokens(width: int, height: int, detail: str = "high") -> int:
    """Input tokens of one image at ``detail`` ("low", "high" or "auto")."""
    if detail not in DETAILS:
        raise ValueError(f"unknown image detail {detail!r}; expected one of {DETAILS}")
    if detail == "low":
        return LOW_DETAIL_TOKENS
    w, h = float(width), float(height)
    scale = min(1.0, MAX_SIDE_PX / max(w, h))  # only ever scaled down
    w, h = w * scale, h * scale
    scale = min(1.0, SHORT_SIDE_PX / min(w, h))
    w, h = w * scale, h * scale
    tiles = math.ceil(round(w, 6) / TILE_PX) * math.ceil(round(h, 6) / TILE_PX)
    return LOW_DETAIL_TOKENS + TILE_TOKENS * tiles


def request_tokens(prompt_text: str, image_sizes: list[tuple[int, int]], detail: str) -> int:
    """Estimated input tokens of one chat request: its text, its images, the message overhead."""
    return (text_tokens(prompt_text) + MESSAGE_OVERHEAD_TOKENS
            + sum(image_tokens(w, h, detail) for w, h in image_sizes))


@dataclass(frozen=True)
class CostEstimate:
    requests: int
    prompt_tokens: int
    completion_tokens: int  # requests x the expected output length
    usd: float
    batch_usd: float

    def summary(self) -> str:
        return (f"{self.requests} requests, ~{self.prompt_tokens:,} input + ~{self.completion_tokens:,} "
                f"output tokens: ~${self.usd:,.2f} (Batch API ~${self.batch_usd:,.2f})")


def estimate(prompt_tokens_per_request: list[int], expected_output_tokens: int, prices: Prices) -> CostEstimate:
    prompt = sum(prompt_tokens_per_request)
    completion = expected_output_tokens * len(prompt_tokens_per_request)
    return CostEstimate(len(prompt_tokens_per_request), prompt, completion,
                        prices.cost(prompt, completion), prices.cost(prompt, completion, batch=True))


def tally(records, prices: Prices) -> dict:
    """The actual cost of store records, from the usage the endpoint reported."""
    prompt = completion = 0
    usd = 0.0
    for record in records:
        usage = record.get("usage") or {}
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        prompt, completion = prompt + p, completion + c
        usd += prices.cost(p, c, batch=record.get("mode") == "batch")
    return {"records": len(records), "prompt_tokens": prompt, "completion_tokens": completion, "usd": usd}


# ----------------------------------------------------------------------------- the gate


class CostConfirmationRequired(RuntimeError):
    """The estimated cost is above ``cost_threshold`` and ``confirm_cost`` is not set."""


def image_sizes(sample) -> list[tuple[int, int]]:
    """(full, crop) sizes in pixels without decoding the image: the header and the box suffice."""
    from PIL import Image

    with Image.open(sample.image_path) as im:
        width, height = im.size
    _, _, w, h = sample.box
    return [(width, height), (max(1, round(w * width)), max(1, round(h * height)))]


def estimate_cost(requests, cfg) -> CostEstimate:
    """The estimate of expert requests (``morelib.expert_requests.ExpertRequest``) under the
    ``01_annotation`` settings ``cfg``."""
    tokens = [request_tokens(r.prompt_text, image_sizes(r.sample), cfg.image_detail) for r in requests]
    return estimate(tokens, cfg.expected_output_tokens, Prices.from_settings(cfg))


def check_budget(estimated: CostEstimate, cfg, batch: bool = False) -> None:
    usd = estimated.batch_usd if batch else estimated.usd
    if usd > cfg.cost_threshold and not cfg.confirm_cost:
        raise CostConfirmationRequired(
            f"estimated cost ${usd:,.2f} is above cost_threshold ${cfg.cost_threshold:,.2f}: "
            f"{estimated.summary()}. Set confirm_cost=True (--confirm-cost) to spend it.")
