"""The shared MQTT client builder over TLS, against Mosquitto with a TLS listener."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from contract.mqtt import make_client, start_persistent
from contract.settings import MqttSettings
from tests.support.services import Broker, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_broker() -> Iterator[Broker]:
    workdir = Path(tempfile.mkdtemp(prefix="wattfleet-tls-"))
    workdir.chmod(0o755)
    broker = Broker(workdir, tls=True).start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _connect(broker: Broker, ca_file: Path | None) -> list[Any]:
    settings = MqttSettings(
        mqtt_port=broker.port,
        mqtt_username="collector",
        mqtt_password=SecretStr(broker.passwords["collector"]),
        mqtt_tls=True,
        mqtt_ca_file=str(ca_file) if ca_file else None,
        mqtt_reconnect_max_s=1,
    )
    client = make_client(settings, "tls-test")
    outcome: list[Any] = []
    done = threading.Event()

    def on_connect(_c, _u, _f, reason, _p) -> None:
        outcome.append(reason)
        done.set()

    def on_connect_fail(_c, _u) -> None:
        outcome.append("failed")
        done.set()

    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    start_persistent(client, settings)
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return outcome


def test_client_connects_over_tls_with_the_brokers_ca(tls_broker):
    outcome = wait_for(lambda: _connect(tls_broker, tls_broker.ca_file), 15, "a TLS connection")
    assert not outcome[0].is_failure


def test_client_refuses_a_broker_it_cannot_verify(tls_broker):
    # The system CA bundle does not know the test CA: the handshake must fail.
    assert _connect(tls_broker, None) == ["failed"]
