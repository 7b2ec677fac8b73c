"""Logging a failing peer (broker, database, device) without flooding the log.

The first failure is logged at ERROR, every further one at DEBUG until the peer
recovers; the caller says so at INFO (Home Assistant's modbus hub keeps the same state
in `ModbusHub._log_error`).
"""

from __future__ import annotations

import logging


class FailureLog:
    """One peer's failing state. Not locked: use it from one thread."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self.failing = False

    def failed(self, msg: str, *args: object, exc_info: bool = False) -> None:
        """Logs a failure: at ERROR the first time, at DEBUG while still failing."""
        level = logging.DEBUG if self.failing else logging.ERROR
        self._log.log(level, msg, *args, exc_info=exc_info)
        self.failing = True

    def recover(self) -> bool:
        """Marks the peer healthy again; True if it was failing (log the recovery at INFO)."""
        was_failing, self.failing = self.failing, False
        return was_failing
