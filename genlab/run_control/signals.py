"""The process's SIGINT/SIGTERM handlers, put back after every command (a failed fit leaves genlab's installed)."""

import signal
import threading


def signal_handlers() -> dict[int, object]:
    """The process's SIGINT/SIGTERM handlers (only the main thread may set them)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore(handlers: dict[int, object]) -> None:
    """Put the handlers back: after a failed fit Lightning's teardown reinstalls the ones it saved, i.e. genlab's."""
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)
