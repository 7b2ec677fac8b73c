"""Ingest confirmations: the hub telling a node which of its samples it holds.

After committing a batch, a collector publishes one message per node whose samples the
batch held, QoS 1, on `nodes/{node_id}/ingested`: `{"seqs": [[first, last], ...]}`,
the inclusive `seq` ranges now stored (or stored already: a redelivery), or dead-lettered
for good (a sample the hub will never store, whatever the node resends). A node deletes
a buffered sample only when a confirmation names its seq, and resends what stays
unconfirmed (docs/operations.md, "Delivery guarantee").

A confirmation names each seq once at most; more ranges than MAX_RANGES go out as
several messages (`confirmation_bodies`). Agents that predate confirmations do not
subscribe to them, and the broker drops what nobody subscribed to.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated

from pydantic import AfterValidator, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from contract.fields import PG_INTEGER_RANGES
from contract.telemetry import PAYLOAD_CONFIG

MAX_RANGES = 1_000

_SEQ_MIN, _SEQ_MAX = 0, PG_INTEGER_RANGES["int8"][1]
Seq = Annotated[int, Field(ge=_SEQ_MIN, le=_SEQ_MAX, strict=True)]


def _ordered(seq_range: tuple[int, int]) -> tuple[int, int]:
    if seq_range[0] > seq_range[1]:
        raise ValueError("a range's first seq must not be above its last")
    return seq_range


SeqRange = Annotated[tuple[Seq, Seq], AfterValidator(_ordered)]


@with_config(PAYLOAD_CONFIG)
class IngestConfirmation(TypedDict):
    """Published on `nodes/{node_id}/ingested`; each range is [first, last], inclusive."""

    seqs: Annotated[list[SeqRange], Field(min_length=1, max_length=MAX_RANGES)]


INGEST_CONFIRMATION = TypeAdapter(IngestConfirmation)


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """The seqs as sorted, inclusive runs of consecutive numbers (duplicates merged)."""
    return merged_ranges((seq, seq) for seq in set(seqs))


def merged_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges sorted, with overlapping and adjacent ones joined."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def confirmation_bodies(ranges: Iterable[tuple[int, int]]) -> Iterator[bytes]:
    """The JSON messages confirming these inclusive seq ranges (in any order, overlapping
    or not), MAX_RANGES ranges each at most."""
    joined = merged_ranges(ranges)
    for start in range(0, len(joined), MAX_RANGES):
        body = IngestConfirmation(seqs=joined[start : start + MAX_RANGES])
        yield INGEST_CONFIRMATION.dump_json(body)
