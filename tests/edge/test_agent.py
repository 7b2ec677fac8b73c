"""The agent end to end: simulator -> agent -> Mosquitto (repo ACLs) -> collector -> DB."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SIMULATOR_UNIT
from tests.support.agent import AgentProcess
from tests.support.fleet import create_tenant, enroll
from tests.support.fleet import stored_seqs as _seqs
from tests.support.services import stop_process, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def site(database, broker, collector_factory, simulator, tmp_path):
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector_factory().start()
    return node, lambda **o: AgentProcess(tmp_path, broker, node, simulator, SIMULATOR_UNIT, **o)


def test_agent_publishes_what_the_inverter_reads(database, site):
    node, make_agent = site
    agent = make_agent().start()
    try:
        wait_for(lambda: len(_seqs(database, node.id)) >= 5, 30, "five samples in the database")
        page = agent.http("/")
        status = json.loads(agent.http("/status.json"))
        metrics = agent.http("/metrics")
        with database.connect() as conn:
            soc, solar, load, mode = conn.execute(
                "SELECT soc_percent, solar_w, load_w, grid_mode FROM telemetry"
                " WHERE node_id = %s ORDER BY seq LIMIT 1",
                (node.id,),
            ).fetchone()
    finally:
        assert stop_process(agent.proc) == 0
        agent.release()
    assert soc == pytest.approx(62.5)  # the simulator's clock stands at noon
    assert "status.json" in page
    assert status["broker_connected"] is True
    assert status["device_available"] is True
    assert status["soc_percent"] == pytest.approx(62.5)
    assert status["last_seq"] >= 4
    assert status["inventory"]["inverter"]["serial"] == "SIM-000007"
    assert "wattfleet_edge_broker_connected 1.0" in metrics
    assert "wattfleet_edge_oldest_unconfirmed_age_seconds" in metrics
    assert "oldest_unconfirmed_age_s" in status
    assert solar > 1000
    assert load > 0
    assert mode == "AUTO"
    seqs = _seqs(database, node.id)
    assert seqs == list(range(len(seqs)))


def test_broker_outage_is_replayed_exactly_once_in_order(database, site):
    node, make_agent = site
    agent = make_agent().start()
    try:
        wait_for(lambda: len(_seqs(database, node.id)) >= 3, 30, "first samples")
        agent.proxy.cut()
        wait_for(lambda: len(agent.buffered()) >= 40, 30, "a backlog while the broker is away")
        outage = agent.buffered()
        agent.proxy.restore()
        wait_for(lambda: set(outage) <= set(_seqs(database, node.id)), 60, "backlog replayed")
    finally:
        assert stop_process(agent.proc) == 0
        agent.release()
    # Every seq the agent numbered ends in the database or is still buffered (both only
    # for a sample whose PUBACK arrived after the agent stopped listening).
    wait_for(
        lambda: (
            set(_seqs(database, node.id)) | set(agent.buffered()) == set(range(agent.next_seq()))
        ),
        15,
        "every seq stored or still buffered",
    )
    with database.connect() as conn:
        arrival = [
            r[0]
            for r in conn.execute(
                "SELECT received_at FROM telemetry WHERE node_id = %s AND seq = ANY(%s)"
                " ORDER BY seq",
                (node.id, outage),
            )
        ]
    assert arrival == sorted(arrival), "backlog was not replayed in seq order"
    assert "disconnected from the broker" in agent.log_path.read_text()


def test_broker_restart_loses_nothing_with_a_single_collector(
    database, broker, collector_factory, simulator, tmp_path
):
    """The broker itself stops and starts again (its persistence kept). One collector on a
    plain persistent subscription: the broker restores it and queues for it, so every
    sample the agent numbered arrives exactly once, in order."""
    tenant = create_tenant(database)
    (node,) = enroll(database, broker, tenant)
    collector_factory(shared_subscription="false").start()
    agent = AgentProcess(tmp_path, broker, node, simulator, SIMULATOR_UNIT, via_proxy=False)
    agent.start()
    try:
        wait_for(lambda: len(_seqs(database, node.id)) >= 3, 30, "first samples")
        broker.stop()
        wait_for(lambda: len(agent.buffered()) >= 20, 30, "a backlog while the broker is down")
        outage = agent.buffered()
        broker.start()
        wait_for(lambda: set(outage) <= set(_seqs(database, node.id)), 60, "backlog replayed")
        wait_for(lambda: len(_seqs(database, node.id)) > max(outage) + 5, 30, "live again")
    finally:
        assert stop_process(agent.proc) == 0
    wait_for(
        lambda: (
            set(_seqs(database, node.id)) | set(agent.buffered()) == set(range(agent.next_seq()))
        ),
        15,
        "every seq stored or still buffered",
    )
    with database.connect() as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT seq) FROM telemetry WHERE node_id = %s", (node.id,)
        ).fetchone()
    assert rows == distinct
