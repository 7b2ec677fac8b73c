"""Flow control instead of a blocked network thread: while the database is down, the
broker holds back what the collector's queue cannot take (MQTT 5 receive maximum), and
everything arrives once the database returns."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from contract import topics
from tests.support.fleet import (
    count_rows,
    create_tenant,
    enroll,
    mqtt_client,
    publish_all,
    sample,
    scrape,
    wait_rows,
)
from tests.support.proxy import proxy_for_database
from tests.support.services import wait_for

pytestmark = pytest.mark.integration

QUEUE_MAX = 20


def test_a_full_queue_holds_the_broker_back_without_blocking_intake(
    database, broker, collector_factory
):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    proxy, url = proxy_for_database(database.url)
    try:
        collector = collector_factory(
            database_url=url,
            db_retry_max_s="1",
            queue_max_messages=str(QUEUE_MAX),
            batch_max_messages="5",
        ).start()
        start = datetime.now(UTC) - timedelta(minutes=30)
        msgs = [
            (
                topics.telemetry(node.id),
                json.dumps(sample(node.id, i, start + timedelta(seconds=i))),
            )
            for i in range(10 * QUEUE_MAX)
        ]
        proxy.cut()
        publish_all(mqtt_client(broker, node.id, node.password), msgs)
        wait_for(
            lambda: scrape(collector.metrics_port).get("wattfleet_collector_commit_failures_total"),
            20,
            "failed commits",
        )
        metrics = scrape(collector.metrics_port)
        received = metrics["wattfleet_collector_messages_received_total{kind=telemetry}"]
        assert received <= QUEUE_MAX  # the broker kept the rest
        assert metrics["wattfleet_collector_queue_full_total"] == 0
        assert (
            count_rows(database, "SELECT count(*) FROM telemetry WHERE node_id = %s", (node.id,))
            == 0
        )

        proxy.restore()
        wait_rows(
            database,
            10 * QUEUE_MAX,
            "SELECT count(*) FROM telemetry WHERE node_id = %s",
            (node.id,),
        )
        assert collector.stop() == 0
    finally:
        proxy.close()
