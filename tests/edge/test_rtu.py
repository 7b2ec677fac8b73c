"""Modbus RTU: the agent's reader and the simulator on the two ends of a serial line (a
pseudo-terminal pair made by socat), the way a Pi talks RS-485 to an inverter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent import modbus_client
from edge.config import EdgeSettings
from edge.inverter import SunSpecDevice
from edge.registers import sunspec_map
from tests.support.services import REPO, require_binary, service_env, stop_process, wait_for

pytestmark = pytest.mark.integration

UNIT = 7


@pytest.fixture
def serial_line(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    ends = (tmp_path / "tty-inverter", tmp_path / "tty-pi")
    socat = subprocess.Popen(
        [
            require_binary("socat"),
            f"pty,raw,echo=0,link={ends[0]}",
            f"pty,raw,echo=0,link={ends[1]}",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: all(end.exists() for end in ends), 10, "the pty pair")
        yield ends
    finally:
        stop_process(socat)


@pytest.fixture
def rtu_simulator(serial_line) -> Iterator[Path]:
    inverter_end, pi_end = serial_line
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.simulator",
            "--serial",
            str(inverter_end),
            "--baudrate",
            "19200",
            "--unit-id",
            str(UNIT),
            "--at",
            "12:00",
            "--soc",
            "55",
        ],
        cwd=REPO,
        env=service_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "simulator listening on" in proc.stdout.readline()
        yield pi_end
    finally:
        stop_process(proc)


def test_the_agent_reads_sunspec_over_rtu(rtu_simulator):
    settings = EdgeSettings(
        node_id="rtu-node",
        modbus_transport="rtu",
        modbus_serial_port=str(rtu_simulator),
        modbus_baudrate=19200,
        modbus_unit_id=UNIT,
    )
    client = modbus_client(settings)
    assert client.connect()
    try:
        device = SunSpecDevice(client, UNIT, sunspec_map())
        device.discover()
        assert {1, 124} <= set(device.models)
        reading = device.reading()
        assert reading.soc_percent == pytest.approx(55.0, abs=0.5)
        assert reading.solar_power_w is not None
        assert reading.solar_power_w > 0  # noon
    finally:
        client.close()
