"""Fixtures that start real services on free ports and stop them afterwards.

The database is TimescaleDB from WATTFLEET_TEST_DATABASE_URL when set, otherwise the
embedded PGlite + TimescaleDB server (timescale/embedded). It is migrated once per
session; tests isolate themselves with unique tenant and node ids. Each test that
needs a broker gets its own Mosquitto, so no persistent session or shared
subscription leaks from one test into the next.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from edge.inverter import SunSpecDevice
from edge.registers import sunspec_map
from tests.support.fleet import scrape, unique
from tests.support.services import (
    REPO,
    Broker,
    Database,
    collector_env,
    collector_writer_pid,
    database_from_env,
    free_port,
    migrate,
    service_env,
    start_module,
    stop_process,
    wait_for,
    wait_for_port,
)


@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    db = database_from_env("WATTFLEET_TEST_DATABASE_URL")
    try:
        migrate(db)
        yield db
    finally:
        db.stop()


@pytest.fixture
def broker() -> Iterator[Broker]:
    # Not under pytest's tmp_path: that is private to root, and mosquitto runs as its
    # own user.
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-broker-"))
    workdir.chmod(0o755)
    b = Broker(workdir).start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(workdir, ignore_errors=True)


class CollectorProcess:
    """`python -m collector` as a real subprocess, with its own metrics port."""

    def __init__(self, database: Database, broker: Broker, log_dir: Path, **settings: str) -> None:
        self.metrics_port = free_port()
        self.client_id = settings.pop("client_id", unique("collector"))
        self.log_path = log_dir / f"{self.client_id}.log"
        self.env = collector_env(
            database, broker, self.client_id, self.metrics_port, log_level="DEBUG", **settings
        )
        self.proc: Any = None

    def start(self) -> CollectorProcess:
        self.proc = start_module("collector", self.env, self.log_path)
        wait_for_port(self.metrics_port, 20, self.proc)
        wait_for(
            lambda: scrape(self.metrics_port).get("wattfleet_collector_broker_connected") == 1,
            20,
            "collector connected to the broker",
        )
        return self

    def stop(self) -> int:
        return stop_process(self.proc)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def writer_pid(self) -> int:
        return collector_writer_pid(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def collector_factory(
    database: Database, broker: Broker, tmp_path: Path
) -> Iterator[Callable[..., CollectorProcess]]:
    started: list[CollectorProcess] = []

    def make(**settings: str) -> CollectorProcess:
        proc = CollectorProcess(database, broker, tmp_path, **settings)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        if proc.proc is not None:
            stop_process(proc.proc)


# The simulator's Modbus unit id: not 1, so an agent that ignores its setting fails.
SIMULATOR_UNIT = 3


@pytest.fixture
def simulator() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.simulator",
            "--port",
            str(port),
            "--seed",
            "7",
            "--at",
            "12:00",
            "--soc",
            "62.5",
            "--unit-id",
            "3",
        ],
        cwd=REPO,
        env=service_env(),
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 15, proc)
        yield port
    finally:
        stop_process(proc)


@pytest.fixture
def inverter(simulator) -> Iterator[SunSpecDevice]:
    """The simulator read through the agent's own SunSpec reader, to check effects."""
    client = ModbusTcpClient("127.0.0.1", port=simulator, timeout=2, retries=0)
    client.connect()
    device = SunSpecDevice(client, SIMULATOR_UNIT, sunspec_map())
    device.discover()
    try:
        yield device
    finally:
        client.close()
