"""Fixtures for the collector's tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.alerting import Alertmanager, WebhookReceiver


@pytest.fixture
def alerting() -> Iterator[tuple[Alertmanager, WebhookReceiver]]:
    """Debian's Alertmanager with the repo's config, notifying a local webhook."""
    receiver = WebhookReceiver()
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-am-"))
    manager = Alertmanager(workdir, receiver.url).start()
    try:
        yield manager, receiver
    finally:
        manager.stop()
        receiver.close()
        shutil.rmtree(workdir, ignore_errors=True)
