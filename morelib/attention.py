"""``sdpa_gqa``: transformers' sdpa attention, with the shared key/value heads left to torch when generating.

Qwen2.5-VL's language model shares each key/value head among several query heads (grouped-query
attention; the toy model: 2 key/value heads for 8 query heads). When a batch carries an
attention mask (left-padded generation always does), transformers 5.17's ``sdpa`` copies every
key/value head once per query head (``repeat_kv``) before each call, so every generated token
copies the whole KV cache four times. On a CPU that copy was 22% of the toy's generation time
(cProfile, 300 valid facts). ``torch.nn.functional.scaled_dot_product_attention(enable_gqa=True)``
shares the heads inside the kernel and gives the same output, to the bit in our checks.

Only calls without gradients (generation, and the reference and old log-probabilities of GRPO)
take that path: with gradients, the summation order of the key and value gradients would change
in the last bits, so training runs transformers' own ``sdpa``, exactly as before. Anything else
(no mask, no shared heads, a position bias) goes to transformers' ``sdpa`` as well.

``morelib.model.resolve_attn_implementation`` picks it for ``auto`` on a CPU. Not on a GPU: with a
mask, CUDA's fused kernels do not take ``enable_gqa`` and sdpa would fall back to its slowest one
(transformers' own rule, ``use_gqa_in_sdpa``). ``benchmarks/bench_generate.py`` measures it.
"""

from __future__ import annotations

NAME = "sdpa_gqa"


def sdpa_gqa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs):
    """An attention function of transformers' ``AttentionInterface`` (same arguments and result as ``sdpa``)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    shares_heads = getattr(module, "num_key_value_groups", 1) > 1
    if (not shares_heads or attention_mask is None or torch.is_grad_enabled()
            or kwargs.get("position_bias") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    # With a mask, transformers' sdpa is never causal either: the mask holds the causal pattern.
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True)
    return output.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make ``sdpa_gqa`` a valid ``attn_implementation`` in this process; returns its name.

    The mask is sdpa's too: a name without a mask function of its own gets no mask at all from
    transformers (``masking_utils``), which would let padded prompts attend to their padding.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, sdpa_gqa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME
