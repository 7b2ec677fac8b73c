"""The batch writer process: decodes and commits the batches the intake process hands it.

Why a process and not a thread: decoding (validation, building rows) and writing
(COPY formatting, freeing a committed batch) are CPU work in Python. In the intake
process they held the GIL that paho's network thread needs for every message, and the
two threads handing the GIL back and forth cost more than the work itself. With them
here, the intake process only receives, hands over and acknowledges, about as fast as
a bare paho subscriber, and this work runs on another core (docs/benchmarks.md).

The two talk over a pipe, one batch at a time:
- intake -> writer: a list of `RawMessage`s to decode and commit; a `Quarantine` (file
  these messages as dead letters, without decoding them); None to stop;
- writer -> intake: the batch's `WriteResult` once it is committed, a `DatabaseFailure`
  (nothing of the batch was written; the intake retries it), or a `BatchFailure` (the
  batch raised something else: a bug, perhaps a message no check foresaw; nothing
  was written, and the connection is opened afresh for the next batch).
The writer process owns its database connection. It ignores SIGINT and SIGTERM (the
intake process decides when it stops) and exits when the intake process goes away.
What the intake does with a batch that fails the writer, or kills it, is in
`committer.py`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import multiprocessing
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from collector.config import CollectorSettings
from collector.decode import DeadLetter, Decoder, Limits, Reason
from collector.ingest import BatchWriter, WriteResult
from contract.process import configure_logging
from contract.topics import parse_node_topic

log = logging.getLogger(__name__)

# One received message as it crosses the pipe: (topic, payload, received_at in POSIX
# seconds). A plain tuple because pickling one costs the intake process least; the
# writer decodes it into a `DecodedMessage`.
RawMessage = tuple[str, bytes, float]

# Allocations between two young-generation collections (CPython's default: 700).
GC_GEN0_THRESHOLD = 100_000


def tune_gc() -> None:
    """The cyclic garbage collector kept rescanning the thousands of messages a batch
    holds (and everything imported): a third of the CPU a message in the ingest
    benchmark. Messages are freed by reference counting; collect cycles rarely, and
    never rescan what exists at start."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 1000)


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Files `messages` as dead letters with `reason` and `detail`, undecoded."""

    messages: list[RawMessage]
    reason: Reason
    detail: str


Request = list[RawMessage] | Quarantine


@dataclass(frozen=True, slots=True)
class DatabaseFailure:
    """The database refused or failed the batch; nothing of it was written."""

    error: str


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """Writing the batch raised something other than a database error; nothing of it
    was written."""

    error: str


class WriteError(Exception):
    """The batch is not committed; send it again later."""


class DatabaseUnavailableError(WriteError):
    """The database failed the batch; nothing of it was written."""


class WriterFailedError(WriteError):
    """The batch failed the writer: it raised there (nothing was written), or the
    process died with it (committed or not)."""


class WriterDiedError(WriterFailedError):
    """The writer process died with the batch, committed or not."""


def serve(settings: CollectorSettings, pipe: Connection) -> None:
    """The writer process's main function: one batch at a time until told to stop or
    the intake process is gone."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    configure_logging(settings.log_level, settings.log_format)
    tune_gc()
    writer = _Writer(settings)
    try:
        while True:
            try:
                request: Request | None = pipe.recv()
            except EOFError:
                return
            if request is None:
                return
            reply = writer.handle(request)
            try:
                pipe.send(reply)
            except OSError:
                return  # what was committed and not acknowledged is redelivered
    finally:
        writer.close()


class _Writer:
    """Decodes and writes batches over one database connection, opened on first use and
    again after it broke."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.decoder = Decoder(
            Limits(
                max_payload_bytes=settings.max_payload_bytes,
                future_tolerance=timedelta(seconds=settings.future_tolerance_s),
                max_age=timedelta(days=settings.retention_days),
            )
        )
        self._conn: psycopg.Connection[Any] | None = None

    def handle(self, request: Request) -> WriteResult | DatabaseFailure | BatchFailure:
        # The writer's top-level loop: whatever a batch raises is answered, not fatal.
        try:
            if isinstance(request, Quarantine):
                return self._quarantine(request)
            return self._write(request)
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.broken:
                self._conn.close()
            return DatabaseFailure(str(exc).strip())
        except Exception as exc:
            log.exception("the batch failed in the writer")
            self.close()
            return BatchFailure(f"{type(exc).__name__}: {exc}")

    def _write(self, messages: list[RawMessage]) -> WriteResult:
        decode = self.decoder.decode
        batch = [
            decode(topic, payload, datetime.fromtimestamp(at, UTC))
            for topic, payload, at in messages
        ]
        return BatchWriter(self._connection()).write(batch, datetime.now(UTC))

    def _quarantine(self, request: Quarantine) -> WriteResult:
        letters = []
        for topic, payload, at in request.messages:
            parsed = parse_node_topic(topic)
            node_id = parsed[0] if parsed is not None else None
            letter = DeadLetter(topic, node_id, request.reason, request.detail, payload)
            letters.append((datetime.fromtimestamp(at, UTC), letter))
        return BatchWriter(self._connection()).quarantine(letters)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.settings.database_url,
                autocommit=True,
                prepare_threshold=self.settings.prepare_threshold,
                connect_timeout=10,
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


# The writer process's main function, given its settings and its end of the pipe.
WriterMain = Callable[[CollectorSettings, Connection], None]


class WriterProcess:
    """The intake side of the writer process: starts it, sends it batches one at a
    time, and starts a new one if it dies. `target` runs in the process: `serve`,
    unless a test gives it a writer that fails on purpose."""

    def __init__(self, settings: CollectorSettings, target: WriterMain = serve) -> None:
        self.settings = settings
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._pipe: Connection | None = None
        # Registered after multiprocessing's own exit handler (this module's imports
        # register it), so it runs first: that one joins the process, which ignores
        # SIGTERM and would wait on this pipe forever if the intake exits without
        # calling stop().
        atexit.register(self.stop)

    def start(self) -> None:
        ours, theirs = self._context.Pipe()
        self._process = self._context.Process(
            target=self._target, args=(self.settings, theirs), name="batch-writer", daemon=True
        )
        self._process.start()
        theirs.close()  # so that its death reads as EOF here
        self._pipe = ours

    def write(self, messages: list[RawMessage]) -> WriteResult:
        """Commits the batch through the writer process. Raises DatabaseUnavailableError
        when the database failed it (nothing was written), WriterFailedError when the
        batch raised in the writer (nothing was written) and WriterDiedError when the
        process died with it, committed or not (a new process starts at the next call;
        writing the batch again is idempotent)."""
        return self._call(messages)

    def quarantine(self, messages: list[RawMessage], reason: Reason, detail: str) -> WriteResult:
        """Files the messages as dead letters without decoding them; raises as `write`."""
        return self._call(Quarantine(messages, reason, detail))

    def _call(self, request: Request) -> WriteResult:
        if self._pipe is None:
            self.start()
        assert self._pipe is not None
        try:
            self._pipe.send(request)
            reply = self._pipe.recv()
        except (EOFError, OSError) as exc:
            self._process.join(5)
            code = self._process.exitcode
            self._pipe.close()
            self._pipe = None
            raise WriterDiedError(
                f"the batch writer process died (exit code {code}); starting another"
            ) from exc
        if isinstance(reply, DatabaseFailure):
            raise DatabaseUnavailableError(reply.error)
        if isinstance(reply, BatchFailure):
            raise WriterFailedError(f"the batch failed the batch writer: {reply.error}")
        assert isinstance(reply, WriteResult)
        return reply

    def stop(self) -> None:
        if self._pipe is None:
            return
        with contextlib.suppress(OSError):  # already gone
            self._pipe.send(None)
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._pipe.close()
        self._pipe = None
