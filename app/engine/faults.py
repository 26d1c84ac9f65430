"""Faults the end-to-end tests inject into a live service, off unless asked for.

POKEGEN_FAULT_FREEZE_FILE names a file: while it exists, the scheduler loop
stops at the start of its next turn, as a wedged decoding step would.
"""
from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("pokegen.engine")
FREEZE_FILE_SETTING = "POKEGEN_FAULT_FREEZE_FILE"


def loop_hook_from_env():
    """What the scheduler calls at the start of each turn."""
    path = os.environ.get(FREEZE_FILE_SETTING)
    if not path:
        return _nothing
    log.warning("fault injection on: the loop freezes while %s exists", path)

    def freeze_while_file_exists():
        while os.path.exists(path):
            time.sleep(0.05)
    return freeze_while_file_exists


def _nothing():
    pass
