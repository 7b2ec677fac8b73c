"""uvicorn's access log without the probes: the container healthcheck (every 10 s) and
Prometheus (every 15 s) would otherwise add some 14,000 lines a day that say nothing."""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"
PROBES = frozenset({"/health", "/readiness", "/metrics"})


class QuietProbes(logging.Filter):
    """Drops an access line for a probe that succeeded; a failed probe (a 503 from
    `/readiness`) is an event and stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: (client, method, path with query, HTTP version, status)
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        path, status = str(args[2]).partition("?")[0], args[4]
        return not (path in PROBES and isinstance(status, int) and status < 400)


def quiet_probes() -> None:
    """Unless the level is DEBUG: at DEBUG every request shows."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger(ACCESS_LOGGER).addFilter(QuietProbes())
