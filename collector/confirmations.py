"""The collector's half of the delivery guarantee: telling each node which of its
samples a committed batch holds (contract/confirmations.py, docs/operations.md).

The batch writer process gathers, per node, the seqs a batch confirms (`SeqsByNode`:
stored, stored already, or dead-lettered for good) and hands them to the intake as
ranges, a few pairs a node instead of thousands of ints over the pipe. The intake
publishes them (`Confirmer`) after the commit and before it acknowledges the batch's
messages to the broker, so a crash in between only brings redeliveries, which are
confirmed in turn.
"""

from __future__ import annotations

from collections.abc import Iterable

from collector.metrics import CollectorMetrics
from contract import topics
from contract.confirmations import confirmation_bodies, seq_ranges
from contract.mqtt import MqttLink

# Per node, inclusive (first, last) seq ranges; unordered and overlapping after merges.
NodeRanges = dict[str, list[tuple[int, int]]]


class SeqsByNode:
    """The seqs a batch confirms, gathered per node in the writer process."""

    def __init__(self) -> None:
        self._seqs: dict[str, list[int]] = {}

    def add(self, node_id: str, seqs: Iterable[int]) -> None:
        found = self._seqs.get(node_id)
        if found is None:
            found = self._seqs[node_id] = []
        found.extend(seqs)

    def ranges(self) -> NodeRanges:
        return {node_id: seq_ranges(seqs) for node_id, seqs in self._seqs.items() if seqs}


def merge(into: NodeRanges, other: NodeRanges) -> None:
    """Adds `other`'s ranges to `into` (the parts of a split batch)."""
    for node_id, ranges in other.items():
        into.setdefault(node_id, []).extend(ranges)


class Confirmer:
    """Publishes confirmations through the intake's MQTT link: QoS 1, queued without
    waiting for the broker (paho sends them again after a reconnect; one the broker
    loses only makes the node send those samples again later)."""

    def __init__(self, link: MqttLink, metrics: CollectorMetrics) -> None:
        self.link = link
        self.metrics = metrics

    def publish(self, confirmed: NodeRanges) -> None:
        """One message per node (more only past MAX_RANGES ranges)."""
        published = 0
        for node_id, ranges in confirmed.items():
            topic = topics.ingested(node_id)
            for body in confirmation_bodies(ranges):
                self.link.publish(topic, body, qos=1)
                published += 1
        self.metrics.confirmations_total.inc(published)
