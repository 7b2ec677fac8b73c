"""Fixtures for the edge agent: the simulator as a real pymodbus server process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.services import REPO, free_port, service_env, stop_process, wait_for_port

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
