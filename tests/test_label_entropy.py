"""The label's entropy is read at the label's own tokens, in the same place generation would."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def loaded(toy_world):
    from morelib.model import load_model

    model, processor = load_model(toy_world.model_dir, device="cpu")
    return model.eval(), processor


def _next_token_distribution(model, processor, sample, text_after_prompt):
    """log p(next token | prompt + text) by a plain forward pass, independent of the module."""
    import torch

    from morelib.data import load_images
    from morelib.prompts import student_prompt

    prompt = processor.apply_chat_template(student_prompt(sample), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt + text_after_prompt], images=[list(load_images(sample))], return_tensors="pt")
    with torch.inference_mode():
        return torch.log_softmax(model(**inputs).logits[0, -1].float(), dim=-1)


def test_label_entropy_matches_a_plain_forward_pass(toy_world, loaded):
    from morelib.label_entropy import label_entropies

    model, processor = loaded
    sample = toy_world.samples("valid")[0]
    reasoning = "<think>\nStep 1: a hollow red circle.\n</think>\n<answer>"
    completion = reasoning + "none</answer>"
    (result,) = label_entropies(model, processor, [sample], [completion])
    # The label's first token is the first one that reaches into the label: with the toy's tokenizer
    # it is ">none", which straddles the tag. Predict it with a plain pass over what comes before.
    encoded = processor.tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    index, token_id, start = next((i, t, a) for i, (t, (a, b)) in
                                  enumerate(zip(encoded["input_ids"], encoded["offset_mapping"]))
                                  if b > len(reasoning))
    assert processor.tokenizer(completion[:start], add_special_tokens=False)["input_ids"] == encoded["input_ids"][:index]
    logp = _next_token_distribution(model, processor, sample, completion[:start])
    assert result.first_token == pytest.approx(-(logp.exp() * logp).sum().item(), rel=1e-4, abs=1e-5)
    label_tokens = sum(1 for a, b in encoded["offset_mapping"] if b > len(reasoning) and a < len(reasoning) + 4)
    if label_tokens == 1:
        assert result.mean == pytest.approx(result.first_token)
        assert result.label_prob == pytest.approx(math.exp(logp[token_id].item()), rel=1e-4)
    assert 0 <= result.first_token <= math.log(model.config.text_config.vocab_size) + 1e-4
    assert 0 < result.label_prob <= 1
    assert result.id == sample.id


def test_outputs_without_a_label_are_skipped_and_summarised(toy_world, loaded):
    from morelib.label_entropy import label_entropies, summary

    model, processor = loaded
    samples = toy_world.samples("valid")[:3]
    outputs = ["no answer tag at all", "<answer> </answer>", "<think>x</think>\n<answer>/per/org/leader_of</answer>"]
    results = label_entropies(model, processor, samples, outputs)
    assert [r.id for r in results] == [samples[2].id]
    assert results[0].mean >= 0
    stats = summary(results)
    assert stats["outputs"] == 1 and 0 <= stats["unsure_share"] <= 1
    assert summary([]) == {"outputs": 0}
