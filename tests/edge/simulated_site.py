"""A simulated site on a real Modbus TCP server in this process, on a clock the test
moves, and an agent built (not run) to read it: the test calls `agent.poll()` and moves
the clock between polls, so the simulator's counters and the agent's samples share one
time line."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from edge.agent import Agent
from edge.config import EdgeSettings
from edge.simulator.device import SimulatedInverter
from edge.simulator.site import Site
from tests.support.services import free_port, wait_for_port

UNIT = 3


class SiteClock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, start: datetime) -> None:
        self.s = start.timestamp()

    def __call__(self) -> float:
        return self.s

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.s, UTC)

    def advance(self, seconds: float) -> None:
        self.s += seconds


@contextmanager
def modbus_server(inverter: SimulatedInverter) -> Iterator[int]:
    """Serves the inverter on a free port until the block ends; yields the port."""
    port = free_port()
    started = threading.Event()
    loop: asyncio.AbstractEventLoop | None = None
    stopping: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal loop, stopping
        loop, stopping = asyncio.get_running_loop(), asyncio.Event()
        server = inverter.server("127.0.0.1", port)
        task = asyncio.create_task(server.serve_forever())
        started.set()
        await stopping.wait()
        await server.shutdown()
        await task

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        wait_for_port(port, 15)
        yield port
    finally:
        assert loop is not None
        assert stopping is not None
        loop.call_soon_threadsafe(stopping.set)
        thread.join(10)


@contextmanager
def built_agent(tmp_path: Any, port: int, clock: SiteClock, **settings: Any) -> Iterator[Agent]:
    """An agent (its buffer in `tmp_path`) reading the simulator on `port`, on `clock`."""
    agent = Agent(
        EdgeSettings(
            **{
                "node_id": "site-energy",
                "modbus_port": port,
                "modbus_unit_id": UNIT,
                "buffer_path": tmp_path / "buffer.sqlite3",
                "status_host": "127.0.0.1",
                "status_port": free_port(),
                **settings,
            }
        ),
        clock=clock.now,
    )
    try:
        yield agent
    finally:
        agent.status_server.server.server_close()
        if agent.coordinator_server is not None:
            agent.coordinator_server.server.server_close()
        agent.device.client.close()
        agent.buffer.close()


@contextmanager
def simulated_site(
    tmp_path: Any, start: datetime, soc_percent: float = 50.0, **settings: Any
) -> Iterator[tuple[Agent, SimulatedInverter, SiteClock]]:
    """An agent reading a simulated site (seed 7) on a clock starting at `start`."""
    clock = SiteClock(start)
    inverter = SimulatedInverter(Site(seed=7, soc_percent=soc_percent), UNIT, clock)
    with modbus_server(inverter) as port, built_agent(tmp_path, port, clock, **settings) as agent:
        yield agent, inverter, clock
