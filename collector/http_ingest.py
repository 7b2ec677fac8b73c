"""Telemetry over HTTPS (`wattfleet-collector http-ingest`): for nodes whose network lets
only HTTPS out, and for devices that can only POST.

One code path with the MQTT intake: a request's body is decoded by the same `Decoder`
(same limits, same dead-letter reasons) as a message on `nodes/{id}/telemetry`, and
written by the same `BatchWriter` in one transaction (the same idempotent COPY, the same
conflict rules), as a batch of one message. Its dead letters name the channel in their
topic (`http:nodes/{id}/telemetry`). The answer is sent after the commit and names the
seq ranges held for good (contract/http_ingest.py), as an MQTT confirmation would.

A request must be signed with its node's secret (contract/http_ingest.py) within
`http_ingest_clock_window_s` of the hub's clock; the node must be enabled (else 403). A
body above `max_payload_bytes` is refused (413) before it is read whole, and each node
may post `http_ingest_rate_per_node` requests (429 with Retry-After beyond). Nothing a
request sends is answered with a 500: a database that is down is a 503 with Retry-After.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import uvicorn
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, start_http_server
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.config import CollectorSettings
from collector.decode import DecodedMessage, Decoder, Limits
from collector.ingest import BatchWriter, WriteResult
from contract import topics
from contract.confirmations import merged_ranges, seq_ranges
from contract.http_ingest import (
    INGEST_ANSWER,
    METHOD,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeadSample,
    IngestAnswer,
    ingest_path,
    signature_matches,
)
from contract.text import storable

log = logging.getLogger(__name__)

CHANNEL = "http:"
# What a dead letter's detail may take of an answer.
MAX_DETAIL_CHARS = 1_024
DATABASE_RETRY_AFTER_S = 5
# A refused body up to this size is read to its end (and dropped) before the 413: a
# client still sending it would otherwise meet a closed connection instead of the
# answer. A larger one is not worth the bandwidth: the connection just ends.
DRAIN_MAX_BYTES = 8 * 1_048_576
# How long a request waits for a database connection before its 503: well inside the
# agent's own timeout (edge/http_fallback.py), so it hears the 503, not a timeout.
CONNECTION_WAIT_S = 5.0
REQUIRED_HEADERS = f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required"
NODE_LOOKUP = "SELECT command_secret, enabled FROM nodes WHERE id = %s"


class HttpIngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Exposed with _total appended.
        self.requests_total = Counter(
            "wattfleet_http_ingest_requests",
            "Telemetry POSTs answered, by status code.",
            ["status"],
            registry=registry,
        )
        self.samples_written_total = Counter(
            "wattfleet_http_ingest_samples_written",
            "Samples inserted over HTTPS (not those stored already).",
            registry=registry,
        )
        self.dead_letters_total = Counter(
            "wattfleet_http_ingest_dead_letters",
            "Dead letters filed for HTTPS requests, by reason.",
            ["reason"],
            registry=registry,
        )


class RequestRefusedError(Exception):
    """A request answered without touching telemetry: status code and why."""

    def __init__(self, status_code: int, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    body: IngestAnswer


def _answer(node_id: str, result: WriteResult) -> Answer:
    """What the commit holds for the node: the seqs to delete, which of them are stored,
    and the dead letters with their reasons. A letter without a seq filed the whole
    body: then nothing of it is stored, and, if nothing is held either, the body was
    unreadable (422)."""
    held = merged_ranges(result.confirmed.get(node_id, []))
    dead: list[DeadSample] = [
        DeadSample(
            seq=letter.seq,
            reason=letter.reason.value,
            detail=storable(letter.detail[:MAX_DETAIL_CHARS]),
        )
        for letter in result.letters
    ]
    whole_body_dead = any(letter.seq is None for letter in result.letters)
    dead_seqs = {letter.seq for letter in result.letters}
    stored = (
        []
        if whole_body_dead
        else seq_ranges(
            seq for first, last in held for seq in range(first, last + 1) if seq not in dead_seqs
        )
    )
    status_code = 422 if whole_body_dead and not held else 200
    return Answer(status_code, IngestAnswer(seqs=held, stored=stored, dead_letters=dead))


class HttpIngest:
    """The endpoint's work, without HTTP: authenticate, limit, decode, write, answer."""

    def __init__(
        self, settings: CollectorSettings, pool: ConnectionPool[Any], metrics: HttpIngestMetrics
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.decoder = Decoder(
            Limits(
                max_payload_bytes=settings.max_payload_bytes,
                future_tolerance=timedelta(seconds=settings.future_tolerance_s),
                max_age=timedelta(days=settings.retention_days),
            )
        )
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._rate = parse(settings.http_ingest_rate_per_node)

    def handle(self, node_id: str, timestamp: str, sig: str, body: bytes) -> Answer:
        """Raises RequestRefusedError for a request that stores nothing (401, 403, 429, 503)."""
        try:
            with self.pool.connection() as conn:
                self._authenticate(conn, node_id, timestamp, sig, body)
                self._limit(node_id)
                decoded = self._decode(node_id, body)
                result = BatchWriter(conn, keep_letters=True).write([decoded], datetime.now(UTC))
        except psycopg.Error as exc:  # the pool's timeout included
            log.warning("http ingest: the database is unavailable: %s", exc)
            raise RequestRefusedError(503, "database unavailable", DATABASE_RETRY_AFTER_S) from exc
        self.metrics.samples_written_total.inc(result.inserted)
        for reason, count in result.dead.items():
            self.metrics.dead_letters_total.labels(reason.value).inc(count)
        return _answer(node_id, result)

    def _authenticate(
        self, conn: psycopg.Connection[Any], node_id: str, timestamp: str, sig: str, body: bytes
    ) -> None:
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise RequestRefusedError(401, f"{TIMESTAMP_HEADER} must be Unix seconds")
        sent_at = int(timestamp)
        window_s = self.settings.http_ingest_clock_window_s
        now = time.time()
        if abs(now - sent_at) > window_s:
            raise RequestRefusedError(
                401, f"{TIMESTAMP_HEADER} is over {window_s:g} s off the hub's clock ({now:.0f})"
            )
        row = conn.execute(NODE_LOOKUP, (node_id,)).fetchone()
        secret, enabled = row if row is not None else (None, False)
        # An unknown node is answered as a bad signature: ids do not leak.
        if not secret or not signature_matches(
            secret.encode(), METHOD, ingest_path(node_id), timestamp, body, sig
        ):
            raise RequestRefusedError(401, "signature does not match")
        if not enabled:
            raise RequestRefusedError(403, f"node {node_id!r} is disabled")

    def _limit(self, node_id: str) -> None:
        if self._limiter.hit(self._rate, node_id):
            return
        reset_at = self._limiter.get_window_stats(self._rate, node_id).reset_time
        retry_after_s = max(1, int(reset_at - time.time()) + 1)
        raise RequestRefusedError(
            429, f"over {self.settings.http_ingest_rate_per_node} for this node", retry_after_s
        )

    def _decode(self, node_id: str, body: bytes) -> DecodedMessage:
        decoded = self.decoder.decode(topics.telemetry(node_id), body, datetime.now(UTC))
        decoded.topic = CHANNEL + decoded.topic
        for letter in decoded.dead:
            letter.topic = decoded.topic
        return decoded


def _refusal(exc: RequestRefusedError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
    return JSONResponse({"detail": str(exc)}, exc.status_code, headers)


async def _bounded_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) past `max_bytes`: no more than that is kept, and what
    follows is read and dropped up to DRAIN_MAX_BYTES so the client gets the answer."""
    declared = request.headers.get("content-length")
    # ASCII digits only: str.isdigit takes "²" too, which int() refuses.
    number = declared is not None and declared.isascii() and declared.isdigit()
    too_large = number and int(declared or 0) > max_bytes
    if too_large and int(declared or 0) > DRAIN_MAX_BYTES:
        raise RequestRefusedError(413, f"body of {declared} bytes is over {max_bytes}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_MAX_BYTES:
            break
        if size <= max_bytes:
            chunks.append(chunk)
    if too_large:
        raise RequestRefusedError(413, f"body of {declared} bytes is over {max_bytes}")
    if size > max_bytes:
        raise RequestRefusedError(413, f"body is over {max_bytes} bytes")
    return b"".join(chunks)


def create_app(settings: CollectorSettings, registry: CollectorRegistry) -> Starlette:
    pool: ConnectionPool[Any] = ConnectionPool(
        settings.database_url,
        kwargs={"autocommit": True, "prepare_threshold": settings.prepare_threshold},
        min_size=1,
        max_size=settings.http_ingest_db_connections,
        timeout=CONNECTION_WAIT_S,
        open=False,
    )
    metrics = HttpIngestMetrics(registry)
    ingest = HttpIngest(settings, pool, metrics)

    async def telemetry(request: Request) -> Response:
        node_id = request.path_params["node_id"]
        try:
            try:
                topics.telemetry(node_id)
            except ValueError:
                raise RequestRefusedError(404, "not a node id") from None
            timestamp = request.headers.get(TIMESTAMP_HEADER)
            sig = request.headers.get(SIGNATURE_HEADER)
            if not timestamp or not sig:
                raise RequestRefusedError(401, REQUIRED_HEADERS)
            body = await _bounded_body(request, settings.max_payload_bytes)
            answer = await run_in_threadpool(ingest.handle, node_id, timestamp, sig, body)
        except RequestRefusedError as exc:
            log.debug("http ingest refused for %r: %s", node_id, exc)
            metrics.requests_total.labels(str(exc.status_code)).inc()
            return _refusal(exc)
        metrics.requests_total.labels(str(answer.status_code)).inc()
        return Response(
            INGEST_ANSWER.dump_json(answer.body), answer.status_code, media_type="application/json"
        )

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pool.open(wait=False)
        try:
            yield
        finally:
            pool.close()

    return Starlette(
        routes=[
            Route(ingest_path("{node_id}"), telemetry, methods=[METHOD]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def serve(settings: CollectorSettings) -> None:
    """Serves the endpoint until SIGTERM or SIGINT (uvicorn's handlers): over TLS with
    the configured certificate, or plain HTTP only behind a TLS-terminating proxy. Its
    metrics go to `metrics_host:metrics_port`, apart from the endpoint."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    server, _ = start_http_server(settings.metrics_port, settings.metrics_host, registry)
    try:
        uvicorn.run(
            create_app(settings, registry),
            host=settings.http_ingest_host,
            port=settings.http_ingest_port,
            ssl_certfile=settings.http_ingest_tls_cert_file,
            ssl_keyfile=settings.http_ingest_tls_key_file,
            log_level=settings.log_level.lower(),
            log_config=None,
            proxy_headers=False,
        )
    finally:
        server.shutdown()
