"""The watchdog's unreachable database: logged once at ERROR, then at DEBUG, and its
return at INFO (a real database behind a proxy the test cuts)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from collector.config import CollectorSettings
from collector.metrics import CollectorMetrics
from collector.watchdog import Watchdog
from tests.support.proxy import proxy_for_database

pytestmark = pytest.mark.integration


def test_an_unreachable_database_is_logged_once_until_it_answers(database, caplog):
    proxy, proxied = proxy_for_database(database.url)
    try:
        settings = CollectorSettings(
            database_url=proxied, database_prepared_statements=database.prepared_statements
        )
        dog = Watchdog(settings, CollectorMetrics(CollectorRegistry()))
        caplog.set_level(logging.DEBUG, logger="collector.watchdog")
        proxy.cut()
        assert dog.run() is None
        assert dog.run() is None
        proxy.restore()
        assert dog.run() is not None
    finally:
        proxy.close()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "watchdog: " in r.getMessage()]
    assert [level for level, _ in said] == [logging.ERROR, logging.DEBUG, logging.INFO]
    assert said[-1][1] == "watchdog: database reachable again"
