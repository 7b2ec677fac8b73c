"""The agent's HTTPS fallback: when the broker has been unreachable for
`http_fallback_after_s` and `ingest_url` is set, the backlog goes to the hub's ingest
endpoint (contract/http_ingest.py) instead, until the broker is back.

It sends what the buffer holds in seq order, `replay_batch_samples` a request, at the
replay's pace (`replay_max_samples_per_s`), one request at a time: each answer comes
after the hub's commit, and exactly the seqs it names are deleted. Samples taken while
it lasts are sent the same way (the publisher keeps them for replay while disconnected).
Nothing here needs the broker: once the publisher connects again, the fallback stops
and the publisher replays whatever is still buffered over MQTT; a sample sent both ways
is stored once.

Requests go out on a thread of their own, one at a time (`INGEST_TIMEOUT_S` each), so
polling goes on while one waits; the answer is applied on the agent's thread. A refused
or unanswered request is tried again after the hub's Retry-After, or after a back-off
that doubles from RETRY_MIN_S up to RETRY_MAX_S.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from contract.failure_log import FailureLog
from contract.http_ingest import IngestAnswer
from edge.buffer import SampleBuffer
from edge.config import EdgeSettings
from edge.http_ingest import HttpIngestClient, IngestError
from edge.publisher import Publisher
from edge.status_page import EdgeMetrics
from edge.unconfirmed import ReplayPace

log = logging.getLogger(__name__)

INGEST_TIMEOUT_S = 10.0
RETRY_MIN_S = 5.0
RETRY_MAX_S = 300.0


@dataclass(frozen=True, slots=True)
class InFlight:
    answer: Future[IngestAnswer]
    samples: int
    after: int  # the buffer's cursor once it is answered


class HttpFallback:
    """Agent thread only. `monotonic` times the broker's absence, the pace and retries."""

    def __init__(
        self,
        settings: EdgeSettings,
        buffer: SampleBuffer,
        publisher: Publisher,
        metrics: EdgeMetrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        assert settings.ingest_url is not None
        self.settings = settings
        self.buffer = buffer
        self.publisher = publisher
        self.metrics = metrics
        self.monotonic = monotonic
        self.client = HttpIngestClient(
            settings.ingest_url,
            settings.node_id,
            settings.node_secret.get_secret_value().encode(),
            settings.ingest_ca_file,
            INGEST_TIMEOUT_S,
        )
        self._pace = ReplayPace(settings.replay_max_samples_per_s, monotonic)
        self._down_since: float | None = None
        self.active = False
        self._from_seq = 0
        self._retry_at = float("-inf")
        self._retry_s = RETRY_MIN_S
        self._failures = FailureLog(log)
        # One request at a time, off the agent's loop: polling goes on while it waits.
        self._poster = ThreadPoolExecutor(1, thread_name_prefix="http-ingest")
        self._in_flight: InFlight | None = None

    def pump(self) -> bool:
        """Applies the answer to the request in flight, if it came, and sends the next
        batch when the fallback is on and one is due. True while a request is in flight
        or more of the backlog waits to go now."""
        self._apply_answer()
        now = self.monotonic()
        if self.publisher.connected.is_set():
            self._down_since = None
            if self.active:
                self.active = False
                self.metrics.http_fallback_active.set(0)
                log.info("broker reachable again: telemetry goes over MQTT")
            return self._in_flight is not None
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since < self.settings.http_fallback_after_s:
            return False
        if not self.active:
            self.active = True
            self._from_seq = 0
            self.metrics.http_fallback_active.set(1)
            log.warning(
                "broker unreachable for %g s: sending telemetry to %s",
                self.settings.http_fallback_after_s,
                self.settings.ingest_url,
            )
        if self._in_flight is not None:
            return True
        if now < self._retry_at or not self._pace.ready():
            return False
        return self._send_batch()

    def close(self) -> None:
        """Stops without waiting for a request in flight: its samples stay buffered."""
        self._poster.shutdown(wait=False, cancel_futures=True)

    def _send_batch(self) -> bool:
        rows, after = self.buffer.pending(self.settings.replay_batch_samples, self._from_seq)
        if not rows:
            self._from_seq = 0  # anything left unconfirmed behind the cursor goes again
            return False
        payload = '{"samples":[' + ",".join(body for _, body in rows) + "]}"
        answer = self._poster.submit(self.client.post, payload.encode())
        self._in_flight = InFlight(answer, len(rows), after)
        self._pace.spent(len(rows))
        return True

    def _apply_answer(self) -> None:
        """Deletes exactly what the hub's answer names; or, with no answer, sets when to
        try again."""
        sent = self._in_flight
        if sent is None or not sent.answer.done():
            return
        self._in_flight = None
        try:
            answer = sent.answer.result()
        except IngestError as exc:
            self._failures.failed("HTTPS telemetry fallback failed: %s", exc)
            wait_s = exc.retry_after_s if exc.retry_after_s is not None else self._retry_s
            self._retry_at = self.monotonic() + wait_s
            self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
            return
        if self._failures.recover():
            log.info("the ingest endpoint takes telemetry again")
        self._retry_s = RETRY_MIN_S
        self._from_seq = sent.after
        held = answer["seqs"]
        self.buffer.delete_ranges(held)
        self.publisher.unconfirmed.confirmed(held)
        self.metrics.http_sent_total.inc(sent.samples)
        dead = answer["dead_letters"]
        if dead:
            log.warning(
                "the hub dead-lettered %d samples, first seq %s: %s (%s)",
                len(dead),
                dead[0]["seq"],
                dead[0]["reason"],
                dead[0]["detail"],
            )
