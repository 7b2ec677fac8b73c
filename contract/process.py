"""What every service's `__main__` does the same way: logging and stop signals."""

from __future__ import annotations

import json
import logging
import signal
import threading
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# APScheduler logs every run of every job at INFO ("Running job", "executed successfully"):
# tens of thousands of lines a day that say nothing. Missed runs and failing jobs are
# WARNING and ERROR, so they still show.
SCHEDULER_LOGGER = "apscheduler"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ts (ISO 8601, UTC), level, logger,
    message, and exception (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines: a traceback stays on its record's one line.
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Root logging for a service: its level, text or JSON lines on stderr, and the
    scheduler's per-run chatter off unless the level is DEBUG."""
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger(SCHEDULER_LOGGER).setLevel(logging.WARNING)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for the service's run loop to watch."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
