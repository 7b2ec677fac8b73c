"""The MQTT link over TLS, against Mosquitto with a TLS listener."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from contract.mqtt import MqttLink
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


def _link(broker: Broker, ca_file: Path | None) -> MqttLink:
    settings = MqttSettings(
        mqtt_port=broker.port,
        mqtt_username="collector",
        mqtt_password=SecretStr(broker.passwords["collector"]),
        mqtt_client_id="tls-test",
        mqtt_tls=True,
        mqtt_ca_file=str(ca_file) if ca_file else None,
        mqtt_reconnect_max_s=1,
    )
    link = MqttLink(settings, [])
    link.start()
    return link


def test_link_connects_over_tls_with_the_brokers_ca(tls_broker):
    link = _link(tls_broker, tls_broker.ca_file)
    try:
        assert link.connected.wait(15)
    finally:
        link.stop()


def test_link_refuses_a_broker_it_cannot_verify(tls_broker, caplog):
    # The system CA bundle does not know the test CA: the handshake must fail, and keep
    # failing, logged once at ERROR.
    caplog.set_level(logging.DEBUG, logger="contract.mqtt")
    link = _link(tls_broker, None)
    try:
        failures = wait_for(
            lambda: [r for r in caplog.records if "cannot connect" in r.getMessage()][2:],
            15,
            "three failed attempts",
        )
    finally:
        link.stop()
    assert not link.connected.is_set()
    assert [r.levelname for r in failures] == ["DEBUG"] * len(failures)
    assert [r.levelname for r in caplog.records if r.levelno >= logging.ERROR] == ["ERROR"]
