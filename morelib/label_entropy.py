"""How sure a model is of its label: the entropy of its next-token distribution on the label.

TRL logs the mean entropy over every completion token during GRPO. That mean is mostly the
reasoning's: a model can be unsure of its wording and sure of its label, or the reverse. GRPO's
answer reward acts on the label, and it can only teach where sampling sometimes picks another
label, so the number that says how much room it has is the entropy *at the label's tokens*.

Given a model and its own outputs (a predictions file), this re-reads each output with one
forward pass and returns, per output, the entropy (in nats) of the model's distribution at the
first token of the label inside ``<answer>...</answer>`` (where ``none`` and the relations part
ways), the mean over all the label's tokens, and the probability of the whole label it gave.
Outputs without an answer tag are skipped. ``benchmarks/stage2_valid.py`` reports it for each experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from morelib.data import load_images
from morelib.prompts import student_prompt

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"


@dataclass
class LabelEntropy:
    id: str
    first_token: float  # nats, at the label's first token
    mean: float         # nats, averaged over the label's tokens
    label_prob: float   # probability of the label the output gave, given its reasoning


def _label_chars(completion: str) -> tuple[int, int] | None:
    """Where the label inside the last ``<answer>...</answer>`` starts and ends, or None."""
    start = completion.rfind(ANSWER_OPEN)
    if start < 0:
        return None
    start += len(ANSWER_OPEN)
    end = completion.find(ANSWER_CLOSE, start)
    end = len(completion) if end < 0 else end
    return (start, end) if completion[start:end].strip() else None


def label_entropies(model, processor, samples: Sequence, completions: Sequence[str],
                    template: str | None = None) -> list[LabelEntropy]:
    """One :class:`LabelEntropy` per (sample, its completion) that has a label; see the module doc."""
    import torch

    tokenizer = processor.tokenizer
    results = []
    for sample, completion in zip(samples, completions):
        chars = _label_chars(completion)
        if chars is None:
            continue
        prompt_text = processor.apply_chat_template(student_prompt(sample, template), add_generation_prompt=True,
                                                    tokenize=False)
        prompt = processor(text=[prompt_text], images=[list(load_images(sample))], return_tensors="pt")
        # The prompt ends with the assistant header, so the completion's tokens follow it as they
        # were generated. A token that straddles "<answer>" and the label counts as the label's.
        encoded = tokenizer(completion[:chars[1]], add_special_tokens=False, return_offsets_mapping=True)
        label_tokens = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > chars[0] and a < chars[1]]
        if not label_tokens:
            continue
        n_prompt = prompt["input_ids"].shape[1]
        ids = torch.cat([prompt["input_ids"], torch.tensor([encoded["input_ids"]])], dim=1)
        inputs = {**prompt, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for key, value in prompt.items():  # per-token types (text / image) of the prompt: the rest is text
            if key not in ("input_ids", "attention_mask") and value.dim() == 2 and value.shape[1] == n_prompt:
                inputs[key] = torch.cat([value, value.new_zeros((1, ids.shape[1] - n_prompt))], dim=1)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        with torch.inference_mode():
            logits = model(**inputs).logits[0]
        positions = torch.tensor([n_prompt + i - 1 for i in label_tokens], device=logits.device)
        logp = torch.log_softmax(logits[positions].float(), dim=-1)
        entropy = -(logp.exp() * logp).sum(dim=-1)
        chosen = logp.gather(1, ids[0, positions + 1].unsqueeze(1).to(logp.device)).sum().item()
        results.append(LabelEntropy(id=sample.id, first_token=entropy[0].item(), mean=entropy.mean().item(),
                                    label_prob=math.exp(chosen)))
    return results


def summary(entropies: Sequence[LabelEntropy]) -> dict:
    """Means over outputs, and the share of outputs whose label the model gives with under 90%."""
    n = len(entropies)
    if not n:
        return {"outputs": 0}
    return {"outputs": n,
            "first_token": round(sum(e.first_token for e in entropies) / n, 4),
            "mean": round(sum(e.mean for e in entropies) / n, 4),
            "unsure_share": round(sum(e.label_prob < 0.9 for e in entropies) / n, 4)}
