"""Turning one MQTT message into accepted samples or dead letters, with a reason.

Pure functions over bytes: no broker or database needed, so every rejection class is
unit-tested. Checks that need the database (unknown or disabled node) live in
`ingest.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import from_json

from collector.telemetry_row import Decision, decision, telemetry_row
from contract.fields import PG_INTEGER_RANGES
from contract.inventory import MAX_INVENTORY_BYTES, NodeInventory
from contract.telemetry import (
    IMPLAUSIBLE_ERROR_TYPES,
    NODE_STATUS,
    TELEMETRY_BATCH,
    TELEMETRY_BATCH_SHAPE,
    TELEMETRY_SAMPLE,
    NodeStatus,
    TelemetrySample,
)
from contract.topics import parse_node_topic


class Reason(StrEnum):
    """Why a payload went to the dead-letter table (also the metric's label)."""

    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NODE_ID_MISMATCH = "node_id_mismatch"
    UNKNOWN_NODE = "unknown_node"
    DISABLED_NODE = "disabled_node"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    IMPLAUSIBLE_VALUE = "implausible_value"
    UNEXPECTED_TOPIC = "unexpected_topic"
    REJECTED_BY_DATABASE = "rejected_by_database"
    # The node's sample at this time is stored (or came first in the batch) with other
    # values; an exact repeat is a duplicate, not a dead letter.
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    # The node's sample with this seq is stored (or came first) with another time.
    CONFLICTING_SEQ = "conflicting_seq"
    # The message failed the batch writer again and again, alone at last: its process
    # died or writing raised (collector/committer.py). Filed undecoded.
    KILLED_WRITER = "killed_writer"


SEQ_MAX = PG_INTEGER_RANGES["int8"][1]
# A refused sample's seq, read as the sample schema reads one (lax), within the
# range a confirmation can name.
READABLE_SEQ = TypeAdapter(Annotated[int, Field(ge=0, le=SEQ_MAX)])

# What a dead letter keeps of an oversized payload: enough to see what it was.
KEPT_PAYLOAD_BYTES = 4_096

# How an agent's replay batch starts (edge/publisher.py): the decoder's hint to try the
# batch schema first. Only a hint; the payload's parsed shape decides.
AGENT_BATCH_START = b'{"samples":['


@dataclass(slots=True)
class DeadLetter:
    """`seq`: the refused sample's, when one sample is refused and its seq is readable
    (an integer a seq can be); the hub then confirms it to the node as dead for good.
    None for anything else (a message refused whole before its samples were read)."""

    topic: str
    node_id: str | None
    reason: Reason
    detail: str
    payload: bytes
    seq: int | None = None


@dataclass(slots=True)
class DecodedMessage:
    """One received message, decoded: what the batch writer commits for it.

    Its accepted samples as telemetry rows (tenant not set yet), the decisions of those
    that carry one, or its status, or its inventory; and its dead letters. `live` is
    False for a replayed backlog, whose timestamps say nothing about the node's clock.
    The payload stays for the dead letters only the writer can file (unknown or
    disabled node, data the database refuses)."""

    topic: str
    payload: bytes
    received_at: datetime
    node_id: str | None
    rows: list[list[Any]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    live: bool = True
    status: NodeStatus | None = None
    inventory: NodeInventory | None = None
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 1_048_576
    future_tolerance: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=30)


def _reason_for(exc: ValidationError) -> tuple[Reason, str]:
    errors = exc.errors(include_url=False, include_input=False)
    types = {e["type"] for e in errors}
    if "json_invalid" in types or "json_type" in types:
        return Reason.INVALID_JSON, errors[0]["msg"]
    detail = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:5]
    )
    if types <= IMPLAUSIBLE_ERROR_TYPES:
        return Reason.IMPLAUSIBLE_VALUE, detail
    return Reason.SCHEMA_VIOLATION, detail


class Decoder:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def decode(self, topic: str, payload: bytes, received_at: datetime) -> DecodedMessage:
        """Validates a message from `nodes/{id}/telemetry`, `/status` or `/inventory`."""
        parsed = parse_node_topic(topic)
        if parsed is None or parsed[1] not in ("telemetry", "status", "inventory"):
            out = DecodedMessage(topic, payload, received_at, None)
            return self._reject(out, Reason.UNEXPECTED_TOPIC, "not a node topic")
        node_id, kind = parsed
        out = DecodedMessage(topic, payload, received_at, node_id)
        if len(payload) > self.limits.max_payload_bytes:
            return self._reject(
                out,
                Reason.PAYLOAD_TOO_LARGE,
                f"{len(payload)} bytes > {self.limits.max_payload_bytes}; first "
                f"{KEPT_PAYLOAD_BYTES} kept",
                payload[:KEPT_PAYLOAD_BYTES],
            )
        if kind == "status":
            return self._decode_status(out)
        if kind == "inventory":
            return self._decode_inventory(out)
        return self._decode_telemetry(out)

    def _decode_inventory(self, out: DecodedMessage) -> DecodedMessage:
        """An inventory names its own node and is no later than its arrival (a report
        from the future would hide every later one: collector/inventory.py keeps the
        newest by the node's clock)."""
        if len(out.payload) > MAX_INVENTORY_BYTES:
            size = f"{len(out.payload)} bytes > {MAX_INVENTORY_BYTES} for an inventory"
            return self._reject(out, Reason.PAYLOAD_TOO_LARGE, size)
        try:
            inventory = NodeInventory.model_validate_json(out.payload)
        except ValidationError as exc:
            return self._reject(out, *_reason_for(exc))
        if inventory.node_id != out.node_id:
            detail = f"payload node_id {inventory.node_id!r} on topic {out.topic!r}"
            return self._reject(out, Reason.NODE_ID_MISMATCH, detail)
        if inventory.ts > out.received_at + self.limits.future_tolerance:
            detail = (
                f"{inventory.ts.isoformat()} is ahead of receive time {out.received_at.isoformat()}"
            )
            return self._reject(out, Reason.TIMESTAMP_IN_FUTURE, detail)
        out.inventory = inventory
        return out

    def _decode_status(self, out: DecodedMessage) -> DecodedMessage:
        try:
            out.status = NODE_STATUS.validate_json(out.payload)
        except ValidationError as exc:
            return self._reject(out, *_reason_for(exc))
        return out

    def _decode_telemetry(self, out: DecodedMessage) -> DecodedMessage:
        """A payload that is a valid sample is a sample; any other object with a
        top-level `samples` key is a replay batch; anything else is a broken sample.
        The fast path tries the schema the payload's start suggests (agents put
        `samples` first in a batch); a payload that fails it is parsed once and judged
        by its shape. (One valid both as a batch and as a sample, which no agent sends,
        is taken as the batch it starts as.)"""
        payload = out.payload
        try:
            if payload.startswith(AGENT_BATCH_START):
                batch = TELEMETRY_BATCH.validate_json(payload)
            else:
                self._accept(out, TELEMETRY_SAMPLE.validate_json(payload), payload)
                return out
        except ValidationError as exc:
            return self._decode_by_shape(out, exc)
        out.live = False
        for sample in batch["samples"]:
            self._accept(out, sample, None)
        return out

    def _decode_by_shape(self, out: DecodedMessage, error: ValidationError) -> DecodedMessage:
        """Slow path, bad or unusually shaped input only: `error` is why the fast path
        refused it. The parser here, like pydantic's, is not recursive and refuses
        nesting deeper than a few hundred levels (`json.loads` raised RecursionError)."""
        try:
            document = from_json(out.payload)
        except ValueError:
            return self._reject(out, *_reason_for(error))
        if not (isinstance(document, dict) and "samples" in document):
            self._reject(out, *_reason_for(error))
            out.dead[-1].seq = _readable_seq(document)
            return out
        try:
            sample = TELEMETRY_SAMPLE.validate_python(document)
        except ValidationError:
            return self._decode_batch_per_sample(out, document)
        self._accept(out, sample, out.payload)  # a sample with a key named `samples`
        return out

    def _decode_batch_per_sample(
        self, out: DecodedMessage, document: dict[str, Any]
    ) -> DecodedMessage:
        """A batch with bad samples: the good ones still land, if the batch itself is
        well-formed (at most MAX_SAMPLES_PER_BATCH samples)."""
        out.live = False
        try:
            raw_samples = TELEMETRY_BATCH_SHAPE.validate_python(document)["samples"]
        except ValidationError as exc:
            return self._reject(out, *_reason_for(exc))
        for raw in raw_samples:
            try:
                sample = TELEMETRY_SAMPLE.validate_python(raw)
            except ValidationError as exc:
                reason, detail = _reason_for(exc)
                letter = DeadLetter(
                    out.topic, out.node_id, reason, detail, _encode(raw), _readable_seq(raw)
                )
                out.dead.append(letter)
                continue
            self._accept(out, sample, None)
        return out

    def _accept(self, out: DecodedMessage, sample: TelemetrySample, payload: bytes | None) -> None:
        """Adds the sample's row, or its dead letter (`payload`: the sample's own bytes,
        None for one of a batch)."""
        reason: Reason | None = None
        received_at = out.received_at
        ts = sample["timestamp"]
        if sample["node_id"] != out.node_id:
            reason, detail = (
                Reason.NODE_ID_MISMATCH,
                (f"payload node_id {sample['node_id']!r} on topic {out.topic!r}"),
            )
        elif ts > received_at + self.limits.future_tolerance:
            reason, detail = (
                Reason.TIMESTAMP_IN_FUTURE,
                f"{ts.isoformat()} is ahead of receive time {received_at.isoformat()}",
            )
        elif ts < received_at - self.limits.max_age:
            reason, detail = (Reason.TIMESTAMP_TOO_OLD, f"{ts.isoformat()} is older than retention")
        if reason is None:
            assert out.node_id is not None  # equal to the sample's, checked above
            out.rows.append(telemetry_row(sample, out.node_id, received_at))
            if (sighting := decision(sample)) is not None:
                out.decisions.append(sighting)
            return
        raw = payload if payload is not None else TELEMETRY_SAMPLE.dump_json(sample)
        out.dead.append(DeadLetter(out.topic, out.node_id, reason, detail, raw, sample["seq"]))

    @staticmethod
    def _reject(
        out: DecodedMessage, reason: Reason, detail: str, kept: bytes | None = None
    ) -> DecodedMessage:
        """Files the whole message (or `kept`, the part of it worth keeping) as dead."""
        payload = out.payload if kept is None else kept
        out.dead.append(DeadLetter(out.topic, out.node_id, reason, detail, payload))
        return out


def _readable_seq(document: Any) -> int | None:
    """The `seq` of a sample that failed validation, if it is one a seq can be."""
    if not isinstance(document, dict):
        return None
    try:
        return READABLE_SEQ.validate_python(document.get("seq"))
    except ValidationError:
        return None


def _encode(raw: Any) -> bytes:
    return json.dumps(raw, separators=(",", ":"), default=str).encode()
