"""morelib.attention: ``sdpa_gqa`` gives what transformers' sdpa gives, without copying the shared
key/value heads when there are no gradients, and its padded generation is right."""

import pytest
import torch
from transformers.integrations import sdpa_attention

from morelib import attention
from morelib.data import load_split
from morelib.inference import GenerationSettings, TransformersBackend, generate
from morelib.model import load_model


class GroupedLayer(torch.nn.Module):
    """What transformers reads off an attention layer: 4 query heads per key/value head."""

    num_key_value_groups = 4
    is_causal = True


def one_step_of_a_padded_batch(requires_grad: bool = False):
    """A decoding step: 3 sequences, 8 query heads, 2 key/value heads, 6 cached positions; the first
    sequence is left-padded by two."""
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(3, 8, 1, 16, generator=generator, requires_grad=requires_grad)
    key = torch.randn(3, 2, 6, 16, generator=generator, requires_grad=requires_grad)
    value = torch.randn(3, 2, 6, 16, generator=generator, requires_grad=requires_grad)
    mask = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    mask[0, :, :, :2] = False
    return query, key, value, mask


def test_without_gradients_it_copies_no_head_and_gives_sdpas_output(monkeypatch):
    query, key, value, mask = one_step_of_a_padded_batch()
    expected, _ = sdpa_attention.sdpa_attention_forward(GroupedLayer(), query, key, value, mask)

    def copied(*args):
        raise AssertionError("the key/value heads were copied")

    monkeypatch.setattr(sdpa_attention, "repeat_kv", copied)
    with torch.no_grad():
        output, weights = attention.sdpa_gqa_forward(GroupedLayer(), query, key, value, mask)
    assert weights is None
    assert output.shape == expected.shape == (3, 1, 8, 16)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)


def test_with_gradients_it_is_transformers_sdpa(monkeypatch):
    copies = []
    repeat_kv = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda states, n: copies.append(n) or repeat_kv(states, n))
    query, key, value, mask = one_step_of_a_padded_batch(requires_grad=True)
    output, _ = attention.sdpa_gqa_forward(GroupedLayer(), query, key, value, mask)
    output.sum().backward()
    assert copies == [4, 4]  # key and value: training keeps transformers' own arithmetic
    assert key.grad is not None


@pytest.fixture(scope="module")
def padded_samples(toy_world):
    test = load_split(toy_world.data_dir, "test")
    return sorted(test, key=lambda s: len(s.text))[:: max(1, len(test) // 6)][:6]  # prompts of different lengths


def test_the_tiny_model_generates_the_same_text_as_with_sdpa(toy_world, padded_samples):
    def backend(kernel):
        model, processor = load_model(toy_world.model_dir, device="cpu", attn_implementation=kernel)
        assert model.config._attn_implementation == kernel
        return TransformersBackend(model.eval(), processor)

    batched = GenerationSettings(max_new_tokens=16, batch_size=len(padded_samples))
    grouped = [p.text for p in generate(backend("sdpa_gqa"), padded_samples, batched)]
    plain = backend("sdpa")
    assert grouped == [p.text for p in generate(plain, padded_samples, batched)]
    # and padding is masked: one prompt at a time (no padding) gives the same text
    one_by_one = GenerationSettings(max_new_tokens=16, batch_size=1)
    assert grouped == [p.text for p in generate(plain, padded_samples, one_by_one)]
