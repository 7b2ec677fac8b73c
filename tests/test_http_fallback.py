"""The agent's HTTPS fallback end to end: a real agent reading the simulator, its broker
connection cut through a proxy, sends its backlog and new samples to the real ingest
endpoint over TLS (a throwaway CA it is told to trust), then goes back to MQTT (the real
collector) once the broker is reachable again. Every seq numbered is stored once."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import SIMULATOR_UNIT, CollectorProcess
from tests.support.agent import AgentProcess
from tests.support.fleet import create_tenant, dead_letters, enroll, scrape, stored_seqs
from tests.support.http_ingest import http_ingest
from tests.support.services import Broker, Database, stop_process, wait_for

pytestmark = pytest.mark.integration

AGENT_SECRET = "test-secret"  # what tests.support.agent configures


def metric(agent: AgentProcess, name: str) -> float:
    return scrape(agent.settings["status_port"]).get(name, 0.0)


# Out of the way, and so tight that the agent is told to wait (429) again and again.
@pytest.mark.parametrize(("rate", "told_to_wait"), [("6000/minute", False), ("2/second", True)])
def test_a_cut_broker_sends_telemetry_over_https_and_back_to_mqtt(
    rate: str,
    told_to_wait: bool,
    database: Database,
    broker: Broker,
    simulator: int,
    collector_factory: Callable[..., CollectorProcess],
    tmp_path,
) -> None:
    collector_factory(batch_max_seconds="0.2").start()
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant, 1)
    with database.connect() as conn:
        conn.execute("UPDATE nodes SET command_secret = %s WHERE id = %s", (AGENT_SECRET, node.id))
    with http_ingest(database, http_ingest_rate_per_node=rate) as endpoint:
        agent = AgentProcess(
            tmp_path,
            broker,
            node,
            simulator,
            SIMULATOR_UNIT,
            confirm_timeout_s=2,
            ingest_url=endpoint.url,
            ingest_ca_file=endpoint.ca_file,
            http_fallback_after_s=1,
            replay_batch_samples=50,
        ).start()
        proxy = agent.proxy
        assert proxy is not None
        try:
            wait_for(lambda: len(stored_seqs(database, node.id)) >= 20, 30, "samples over MQTT")
            assert metric(agent, "wattfleet_edge_http_sent_samples_total") == 0

            proxy.cut()
            wait_for(
                lambda: metric(agent, "wattfleet_edge_http_fallback_active") == 1,
                30,
                "the fallback on",
            )
            cut_at = agent.next_seq()
            wait_for(
                lambda: set(range(cut_at + 20)) <= set(stored_seqs(database, node.id)),
                30,
                "samples taken during the cut stored over HTTPS",
            )
            assert metric(agent, "wattfleet_edge_broker_connected") == 0
            assert json.loads(agent.http("/status.json"))["http_fallback_active"] is True
            assert metric(agent, "wattfleet_edge_http_sent_samples_total") >= 20
            refused = scrape(endpoint.metrics_port).get(
                "wattfleet_http_ingest_requests_total{status=429}", 0
            )
            assert (refused > 0) is told_to_wait

            proxy.restore()
            wait_for(
                lambda: metric(agent, "wattfleet_edge_http_fallback_active") == 0,
                30,
                "the fallback off",
            )
            sent_over_https = metric(agent, "wattfleet_edge_http_sent_samples_total")
            back_at = agent.next_seq()
            wait_for(
                lambda: set(range(back_at + 20)) <= set(stored_seqs(database, node.id)),
                30,
                "samples over MQTT again",
            )
            assert metric(agent, "wattfleet_edge_http_sent_samples_total") == sent_over_https

            numbered = set(range(agent.next_seq()))
            wait_for(
                lambda: numbered <= set(stored_seqs(database, node.id)),
                30,
                "every seq numbered stored",
            )
            seqs = stored_seqs(database, node.id)
            assert len(seqs) == len(set(seqs))
            assert dead_letters(database, node.id) == []
        finally:
            stop_process(agent.proc)
            agent.release()
