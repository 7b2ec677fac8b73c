"""The batch writer process: decodes and commits the batches the intake process hands it.

Why a process and not a thread: decoding (validation, building rows) and writing
(COPY formatting, freeing a committed batch) are CPU work in Python. In the intake
process they held the GIL that paho's network thread needs for every message, and the
two threads handing the GIL back and forth cost more than the work itself. With them
here, the intake process only receives, hands over and acknowledges, about as fast as
a bare paho subscriber, and this work runs on another core (docs/benchmarks.md).

The two talk over a pipe, one batch at a time:
- intake -> writer: a list of `RawMessage`s; None to stop;
- writer -> intake: the batch's `WriteResult` once it is committed, or a
  `DatabaseFailure` (nothing of the batch was written; the intake retries it).
The writer process owns its database connection. It ignores SIGINT and SIGTERM (the
intake process decides when it stops) and exits when the intake process goes away.
"""

from __future__ import annotations

import atexit
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
from collector.ingest import BatchWriter, WriteResult
from contract.process import configure_logging

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
class DatabaseFailure:
    """The database refused or failed the batch; nothing of it was written."""

    error: str


class WriteError(Exception):
    """The batch is not committed; send it again later."""


class DatabaseUnavailableError(WriteError):
    """The database failed the batch; nothing of it was written."""


class WriterDiedError(WriteError):
    """The writer process died with the batch, committed or not."""


def serve(settings: CollectorSettings, pipe: Connection) -> None:
    """The writer process's main function: one batch at a time until told to stop or
    the intake process is gone."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    configure_logging(settings.log_level)
    tune_gc()
    writer = _Writer(settings)
    try:
        while True:
            try:
                messages: list[RawMessage] | None = pipe.recv()
            except EOFError:
                return
            if messages is None:
                return
            reply = writer.write(messages)
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

    def write(self, messages: list[RawMessage]) -> WriteResult | DatabaseFailure:
        decode = self.decoder.decode
        batch = [
            decode(topic, payload, datetime.fromtimestamp(at, UTC))
            for topic, payload, at in messages
        ]
        try:
            return BatchWriter(self._connection()).write(batch, datetime.now(UTC))
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.broken:
                self._conn.close()
            return DatabaseFailure(str(exc).strip())

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


class WriterProcess:
    """The intake side of the writer process: starts it, sends it batches one at a
    time, and starts a new one if it dies."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
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
            target=serve, args=(self.settings, theirs), name="batch-writer", daemon=True
        )
        self._process.start()
        theirs.close()  # so that its death reads as EOF here
        self._pipe = ours

    def write(self, messages: list[RawMessage]) -> WriteResult:
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
