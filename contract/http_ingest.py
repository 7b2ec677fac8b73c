"""Telemetry over HTTPS: the request a node signs and the answer the hub gives.

A node POSTs the MQTT wire format (one sample, or a `{"samples": [...]}` batch,
contract/telemetry.py) to `/nodes/{node_id}/telemetry` on the hub's ingest endpoint
(collector/http_ingest.py). It signs the request with its own node secret, the key its
signed commands are checked with (contract/commands.py): HMAC-SHA256 over the method,
the path, a timestamp (Unix seconds) and the body, hex in SIGNATURE_HEADER, the
timestamp in TIMESTAMP_HEADER. The hub refuses a timestamp outside its window, so a
captured request cannot be replayed later; one replayed within the window stores
nothing new (the insert is idempotent) and only re-confirms what it held.

The answer, sent after the commit, is an `IngestAnswer`: `seqs`, the inclusive ranges
the hub now holds for good (stored, stored already, or dead-lettered: the same ranges
an MQTT confirmation names, contract/confirmations.py), which the node deletes; and
`stored` and `dead_letters` saying which was which, each dead letter with its reason.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from pydantic import Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from contract.confirmations import MAX_RANGES, Seq, SeqRange
from contract.telemetry import MAX_SAMPLES_PER_BATCH, PAYLOAD_CONFIG

TIMESTAMP_HEADER = "X-Wattfleet-Timestamp"
SIGNATURE_HEADER = "X-Wattfleet-Signature"
METHOD = "POST"


def ingest_path(node_id: str) -> str:
    return f"/nodes/{node_id}/telemetry"


def signature(secret: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of one request, under the node's secret. The timestamp is
    signed as sent (its text), so no parsing can make two requests sign alike."""
    message = b"\n".join((method.encode(), path.encode(), timestamp.encode(), body))
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signature_matches(
    secret: bytes, method: str, path: str, timestamp: str, body: bytes, sig: str
) -> bool:
    # compare_digest refuses non-ASCII text; no such signature is ours anyway.
    return sig.isascii() and hmac.compare_digest(
        signature(secret, method, path, timestamp, body), sig
    )


@with_config(PAYLOAD_CONFIG)
class DeadSample(TypedDict):
    """A refused part of the request: a sample (its `seq`), or the whole body (no seq)."""

    seq: Seq | None
    reason: Annotated[str, Field(max_length=64)]
    detail: Annotated[str, Field(max_length=4096)]


Ranges = Annotated[list[SeqRange], Field(max_length=MAX_RANGES)]


@with_config(PAYLOAD_CONFIG)
class IngestAnswer(TypedDict):
    """The hub's answer to a POST, after its commit. `seqs`: what the node may delete."""

    seqs: Ranges
    stored: Ranges
    dead_letters: Annotated[list[DeadSample], Field(max_length=MAX_SAMPLES_PER_BATCH + 1)]


INGEST_ANSWER = TypeAdapter(IngestAnswer)
