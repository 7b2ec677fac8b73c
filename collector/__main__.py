"""`python -m collector`: settings from `WATTFLEET_*`, runs until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from pydantic import ValidationError

from collector.config import CollectorSettings
from collector.service import run


def main() -> int:
    try:
        settings = CollectorSettings()
    except ValidationError as exc:
        print(f"collector: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
