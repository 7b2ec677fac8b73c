"""The batch writer process: decodes and commits the batches the intake process hands it.

Why a process and not a thread: decoding (validation, building rows) and writing
(COPY formatting, freeing a committed batch) are CPU work in Python. In the intake
process they held the GIL that paho's network thread needs for every message, and the
two threads handing the GIL back and forth cost more than the work itself. With them
here, the intake process only receives, hands over and acknowledges, about as fast as
a bare paho subscriber, and this work runs on another core (docs/benchmarks.md).

The two talk over a pipe, one batch at a time:
- intake -> writer: a list of `(topic, payload, received_at)`, `received_at` in POSIX
  seconds; None to stop;
- writer -> intake: the batch's `WriteResult` once it is committed, or a
  `DatabaseFailure` (nothing of the batch was written; the intake retries it).
The writer process owns its database connection. It ignores SIGINT and SIGTERM (the
intake process decides when it stops) and exits when the intake process goes away.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import psycopg

from collector.config import CollectorSettings
from collector.decode import Decoder, Limits
from collector.ingest import BatchWriter, Inbound, WriteResult
from contract.process import configure_logging

# (topic, payload, received_at in POSIX seconds): one message as the writer gets it.
Message = tuple[str, bytes, float]

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
class DatabaseFailure:
    """The database refused or failed the batch; nothing of it was written."""

    error: str


class WriteError(Exception):
    """The batch is not committed; send it again later."""


class DatabaseUnavailableError(WriteError):
    pass


class WriterDiedError(WriteError):
    pass


def serve(settings: CollectorSettings, pipe: Connection) -> None:
    """The writer process's main function."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    configure_logging(settings.log_level)
    tune_gc()
    decoder = Decoder(
        Limits(
            max_payload_bytes=settings.max_payload_bytes,
            future_tolerance=timedelta(seconds=settings.future_tolerance_s),
            max_age=timedelta(days=settings.retention_days),
        )
    )
    conn: psycopg.Connection[Any] | None = None
    try:
        while True:
            try:
                messages: list[Message] | None = pipe.recv()
            except EOFError:
                return  # the intake process is gone
            if messages is None:
                return
            batch = []
            for topic, payload, at in messages:
                received_at = datetime.fromtimestamp(at, UTC)
                batch.append(
                    Inbound(received_at, payload, decoder.decode(topic, payload, received_at))
                )
            reply: WriteResult | DatabaseFailure
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        settings.database_url,
                        autocommit=True,
                        prepare_threshold=settings.prepare_threshold,
                        connect_timeout=10,
                    )
                reply = BatchWriter(conn).write(batch, datetime.now(UTC))
            except psycopg.Error as exc:
                reply = DatabaseFailure(str(exc).strip())
                if conn is not None and conn.broken:
                    conn.close()
            del batch  # freed now, not once the next batch has arrived
            try:
                pipe.send(reply)
            except OSError:
                return  # the intake process is gone; what was committed is redelivered
    finally:
        if conn is not None:
            conn.close()


class WriterProcess:
    """The intake side of the writer process: starts it, sends it batches one at a
    time, and starts a new one if it dies."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._pipe: Connection | None = None

    def start(self) -> None:
        ours, theirs = self._context.Pipe()
        self._process = self._context.Process(
            target=serve, args=(self.settings, theirs), name="batch-writer", daemon=True
        )
        self._process.start()
        theirs.close()  # so that its death reads as EOF here
        self._pipe = ours

    def write(self, messages: list[Message]) -> WriteResult:
        """Commits the batch through the writer process. Raises DatabaseUnavailableError
        when the database failed it (nothing was written) and WriterDiedError when the
        process died with it, committed or not (a new process starts at the next call;
        writing the batch again is idempotent)."""
        if self._pipe is None:
            self.start()
        assert self._pipe is not None
        try:
            self._pipe.send(messages)
            reply = self._pipe.recv()
        except (EOFError, OSError) as exc:
            self._process.join(5)
            code = self._process.exitcode
            self._pipe.close()
            self._pipe = None
            raise WriterDiedError(f"the batch writer process died (exit code {code})") from exc
        if isinstance(reply, DatabaseFailure):
            raise DatabaseUnavailableError(reply.error)
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
