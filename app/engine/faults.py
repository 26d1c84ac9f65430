"""Faults the end-to-end tests inject into a live service, off unless asked for.

POKEGEN_FAULT_FREEZE_FILE names a file: while it exists, the scheduler loop
stops at the start of its next turn, as a wedged decoding step would. While
stopped, it keeps a second file, the same name with FROZEN_SUFFIX, so that a
test knows the loop is held rather than guessing how long a turn takes.

POKEGEN_FAULT_TURN_DELAY is seconds every turn waits, as on a slow machine:
a test that must watch a long generation while it runs then does not race
however fast this CPU decodes a tiny model.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time

log = logging.getLogger("pokegen.engine")
FREEZE_FILE_SETTING = "POKEGEN_FAULT_FREEZE_FILE"
TURN_DELAY_SETTING = "POKEGEN_FAULT_TURN_DELAY"
FROZEN_SUFFIX = ".frozen"


def loop_hook_from_env():
    """What the scheduler calls at the start of each turn."""
    path = os.environ.get(FREEZE_FILE_SETTING)
    delay = float(os.environ.get(TURN_DELAY_SETTING) or 0)
    if not path and not delay:
        return _nothing
    log.warning("fault injection on: the loop freezes while %s exists; each turn waits %g s",
                path, delay)

    def freeze_while_file_exists():
        if delay:
            time.sleep(delay)
        if not path or not os.path.exists(path):
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
