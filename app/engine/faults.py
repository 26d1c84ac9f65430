"""Faults the end-to-end tests inject into a live service, off unless asked for.

POKEGEN_FAULT_FREEZE_FILE names a file: while it exists, the scheduler loop
stops at the start of its next turn, as a wedged decoding step would. While
stopped, it keeps a second file, the same name with FROZEN_SUFFIX, so that a
test knows the loop is held rather than guessing how long a turn takes.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time

log = logging.getLogger("pokegen.engine")
FREEZE_FILE_SETTING = "POKEGEN_FAULT_FREEZE_FILE"
FROZEN_SUFFIX = ".frozen"


def loop_hook_from_env():
    """What the scheduler calls at the start of each turn."""
    path = os.environ.get(FREEZE_FILE_SETTING)
    if not path:
        return _nothing
    log.warning("fault injection on: the loop freezes while %s exists", path)

    def freeze_while_file_exists():
        if not os.path.exists(path):
            return
        open(path + FROZEN_SUFFIX, "w").close()
        try:
            while os.path.exists(path):
                time.sleep(0.05)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + FROZEN_SUFFIX)
    return freeze_while_file_exists


def _nothing():
    pass
