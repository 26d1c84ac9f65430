"""Ctrl-C for child processes, whatever the test run inherited."""
import signal


def interruptible() -> None:
    """preexec_fn for a child that must get Ctrl-C (SIGINT). A test run started
    as a background job (`make test &`) inherits SIGINT ignored, and a Python
    started with SIGINT ignored never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
