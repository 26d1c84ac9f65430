"""Writing files and folders so that a reader sees either the old one or all of the new one,
never a part, whatever stops the writer (Ctrl-C, a full disk, a crash)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path`: a temporary file in the same folder, flushed to disk,
    then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; outputs are ordinary files
        os.replace(tmp_name, path)
    except BaseException:
        # Also on KeyboardInterrupt: leave no temp file behind.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def move_into_place(built: str, output: str) -> None:
    """Renames `built` (a file or folder) to `output`; an older output there goes
    only once the new one is in place."""
    old_dir = None
    if os.path.lexists(output):
        old_dir = tempfile.mkdtemp(dir=os.path.dirname(output), prefix=".replaced-")
        os.rename(output, os.path.join(old_dir, "old"))
    os.rename(built, output)
    if old_dir:
        shutil.rmtree(old_dir, ignore_errors=True)
