from __future__ import annotations

import pytest

from contract import topics


def test_topic_names_round_trip():
    assert topics.telemetry("node-1") == "nodes/node-1/telemetry"
    assert topics.parse_node_topic("nodes/node-1/acks") == ("node-1", "acks")
    assert topics.shared_subscription("status") == "$share/collector/nodes/+/status"


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "node 1", "-lead", "x" * 65])
def test_unsafe_node_ids_are_refused(bad):
    with pytest.raises(ValueError, match="invalid node id"):
        topics.telemetry(bad)


@pytest.mark.parametrize(
    "topic", ["nodes/a/other", "nodes/a", "hub/broadcast", "nodes/+/telemetry"]
)
def test_non_node_topics_do_not_parse(topic):
    assert topics.parse_node_topic(topic) is None
