"""Which access lines `control_api/access_log.py` keeps, on uvicorn's own record shape."""

from __future__ import annotations

import logging

import pytest

from control_api.access_log import ACCESS_LOGGER, QuietProbes


def _access(path: str, status: int) -> logging.LogRecord:
    return logging.LogRecord(
        ACCESS_LOGGER,
        logging.INFO,
        __file__,
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", status),
        None,
    )


@pytest.mark.parametrize(
    ("path", "status", "kept"),
    [
        ("/health", 200, False),
        ("/readiness", 200, False),
        ("/metrics?name[]=x", 200, False),
        ("/readiness", 503, True),  # not ready: an event
        ("/metrics", 404, True),
        ("/nodes", 200, True),
        ("/healthz", 200, True),
    ],
)
def test_successful_probes_are_dropped_and_everything_else_kept(path, status, kept):
    assert QuietProbes().filter(_access(path, status)) is kept
