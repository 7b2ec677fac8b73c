"""What every service's `__main__` does the same way: logging and stop signals."""

from __future__ import annotations

import logging
import signal
import threading


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for the service's run loop to watch."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
