"""Fixtures of the MQTT link tests: a node's own broker account, and a proxy to cut."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.test_mqtt_link import Node
from tests.support.proxy import CuttableProxy


@pytest.fixture
def node(broker) -> Iterator[Node]:
    n = Node(broker)
    try:
        yield n
    finally:
        n.client.disconnect()
        n.client.loop_stop()


@pytest.fixture
def proxy(broker) -> Iterator[CuttableProxy]:
    p = CuttableProxy(broker.port)
    try:
        yield p
    finally:
        p.close()
