"""Nothing lost from the inverter to the database (docs/operations.md, "Delivery
guarantee"): real agents reading the simulator, real Mosquitto with the repo's config,
real collectors and TimescaleDB, and the faults that used to lose samples: the broker
killed or restarted while samples wait in it for a collector, a collector killed
mid-stream, an agent killed mid-replay.

Each test counts `seq` per node in the database: every seq the agent numbered up to a
cut-off after the fault is stored, none twice. An agent keeps a sample until a collector
confirms its commit, and sends again what stays unconfirmed (`confirm_timeout_s`, short
here), so what the broker lost comes back from the Pi."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import SIMULATOR_UNIT
from tests.support.agent import AgentProcess
from tests.support.fleet import create_tenant, enroll, stored_seqs
from tests.support.services import stop_process, wait_for

pytestmark = pytest.mark.integration

NODES = 3
CONFIRM_TIMEOUT_S = 2
# Collectors commit (and so confirm) every 0.2 s instead of every second: the agents'
# replay windows, which wait for confirmations, move five times as fast.
FAST_BATCHES = {"batch_max_seconds": "0.2"}


@pytest.fixture
def agents(database, broker, simulator, tmp_path) -> Iterator[Callable[..., list[AgentProcess]]]:
    """`make(n, **settings)`: n enrolled nodes, each with its agent started, straight to
    the broker (the broker itself is what fails here) unless `via_proxy=True`."""
    started: list[AgentProcess] = []

    def make(count: int = NODES, via_proxy: bool = False, **settings) -> list[AgentProcess]:
        tenant = create_tenant(database)
        made = []
        for i, node in enumerate(enroll(database, broker, tenant, count)):
            workdir = Path(tmp_path, f"agent-{i}")
            workdir.mkdir()
            agent = AgentProcess(
                workdir,
                broker,
                node,
                simulator,
                SIMULATOR_UNIT,
                via_proxy=via_proxy,
                confirm_timeout_s=CONFIRM_TIMEOUT_S,
                **settings,
            )
            made.append(agent.start())
        started.extend(made)
        return made

    yield make
    for agent in started:
        if agent.proc is not None and agent.proc.poll() is None:
            stop_process(agent.proc)
        agent.release()


def wait_stored(database, agents: list[AgentProcess], count: int, what: str) -> None:
    for agent in agents:
        node_id = agent.node.id
        wait_for(lambda: len(stored_seqs(database, node_id)) >= count, 60, what)  # noqa: B023


def assert_every_seq_stored_once(database, agents: list[AgentProcess]) -> None:
    """Every seq numbered by now (the cut-off) reaches the database: no gap below it,
    waiting while the agents resend what the fault lost (above it, a seq may still be on
    its way again). And none is stored twice."""
    for agent in agents:
        node_id, numbered = agent.node.id, set(range(agent.next_seq()))
        wait_for(
            lambda: numbered <= set(stored_seqs(database, node_id)),  # noqa: B023
            120,
            f"{node_id}: seqs 0..{len(numbered) - 1} stored",
        )
        seqs = stored_seqs(database, node_id)
        assert len(seqs) == len(set(seqs)), f"{node_id}: a seq stored twice"


def wait_queued(agents: list[AgentProcess], samples: int = 20) -> None:
    """Until each agent has taken `samples` more (queued in the broker for a collector
    that is away)."""
    for agent in agents:
        target = agent.next_seq() + samples
        wait_for(lambda: agent.next_seq() >= target, 30, "samples queued")  # noqa: B023


def kill_broker(broker) -> None:
    broker.proc.send_signal(signal.SIGKILL)
    broker.proc.wait()
    broker.proc = None


def test_broker_killed_while_the_collector_is_down(database, broker, collector_factory, agents):
    """Samples queued in the broker for a stopped collector die with the broker (it saves
    them every autosave_interval at best); the agents still hold them, unconfirmed."""
    collector = collector_factory(client_id="collector-a", **FAST_BATCHES).start()
    sites = agents()
    wait_stored(database, sites, 5, "first samples")
    assert collector.stop() == 0
    wait_queued(sites)
    kill_broker(broker)
    broker.start()
    collector_factory(client_id="collector-a", **FAST_BATCHES).start()
    assert_every_seq_stored_once(database, sites)


def test_graceful_broker_restart_with_the_shared_subscription(
    database, broker, collector_factory, agents
):
    """Mosquitto 2.0 saves a stopped collector's session on a clean shutdown but does not
    restore its `$share` subscription: what was queued for it, and what the agents
    publish before it subscribes again, reaches nobody."""
    collector = collector_factory(client_id="collector-a", **FAST_BATCHES).start()
    sites = agents()
    wait_stored(database, sites, 5, "first samples")
    assert collector.stop() == 0
    wait_queued(sites)
    broker.stop()
    broker.start()
    wait_queued(sites)
    collector_factory(client_id="collector-a", **FAST_BATCHES).start()
    assert_every_seq_stored_once(database, sites)


def test_two_collectors_one_killed_mid_stream(database, broker, collector_factory, agents):
    first = collector_factory(**FAST_BATCHES).start()
    collector_factory(**FAST_BATCHES).start()
    sites = agents()
    wait_stored(database, sites, 10, "both collectors ingesting")
    first.kill()
    assert_every_seq_stored_once(database, sites)


def test_agent_killed_mid_replay(database, broker, collector_factory, agents):
    collector_factory(**FAST_BATCHES).start()
    # Small replay batches, one at a time, so the kill lands in the middle of the replay.
    (site,) = agents(1, via_proxy=True, replay_batch_samples=10, replay_batches_in_flight=1)
    wait_stored(database, [site], 3, "first samples")
    site.proxy.cut()
    wait_for(lambda: len(site.buffered()) >= 150, 60, "a backlog while the link is down")
    site.proxy.restore()
    wait_for(lambda: len(stored_seqs(database, site.node.id)) >= 40, 60, "replay under way")
    site.proc.kill()
    site.proc.wait()
    assert site.buffered(), "replay finished before the kill: nothing proven"
    site.start()
    assert_every_seq_stored_once(database, [site])
