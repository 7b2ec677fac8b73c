"""Committing batches through the batch writer process, whatever they hold.

The rule for poison: every message of a batch is stored or dead-lettered, and one
message cannot hold up the others. The writer's checks dead-letter what they know to be
bad; this is the rule's last line, for a message no check foresaw, that fails the writer
(writing raises) or kills its process:
- a batch that fails the writer is sent once more (a process may also die of something
  else: the OOM killer, an operator's kill);
- if it fails again, it is split in halves, each committed on its own; a half that fails
  is split again at once, down to the message(s) that fail the writer alone;
- such a message is dead-lettered as KILLED_WRITER, undecoded, by the writer process
  itself: filing it is also the proof that the writer works and the message is what
  does not. If filing fails too, the writer is what is broken: the message is written
  again later, as when the database is down.
A database that is down is not the batch's fault: the same part is sent again with
capped doubling back-off and nothing is split.

What each committed part confirms (collector/confirmations.py) is merged into what the
batch confirms; a part the database or the writer failed confirms nothing until it
commits.
"""

from __future__ import annotations

import logging
import threading
import time

from collector.confirmations import NodeRanges, merge
from collector.decode import Reason
from collector.ingest import WriteResult
from collector.metrics import CollectorMetrics
from collector.writer_process import (
    DatabaseUnavailableError,
    RawMessage,
    WriterFailedError,
    WriterProcess,
)
from contract.failure_log import FailureLog

log = logging.getLogger(__name__)

# Failures of the writer a batch may cause before it is split.
FAILURES_BEFORE_SPLIT = 2
FIRST_RETRY_DELAY_S = 0.5


class Committer:
    """Commits batches through the writer process, retrying while the database is
    unavailable and isolating the messages that fail the writer (see the module)."""

    def __init__(
        self,
        writer: WriterProcess,
        metrics: CollectorMetrics,
        retry_max_s: float,
        stopping: threading.Event,
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.retry_max_s = retry_max_s
        self.stopping = stopping
        self._database = FailureLog(log)

    def commit(self, messages: list[RawMessage]) -> NodeRanges | None:
        """Commits the messages: once this returns, each is stored or dead-lettered, and
        the answer is, per node, the seqs to confirm. None only if asked to stop while
        the database (or the writer) is still failing (what was committed of them is
        redelivered, written again idempotently and confirmed then)."""
        confirmed: NodeRanges = {}
        # Parts left to commit, last first, with how often each failed the writer.
        parts: list[tuple[list[RawMessage], int]] = [(messages, 0)]
        delay = FIRST_RETRY_DELAY_S
        while parts:
            part, failures = parts.pop()
            filing = failures >= FAILURES_BEFORE_SPLIT and len(part) == 1
            started = time.perf_counter()
            try:
                if filing:
                    result = self.writer.quarantine(part, Reason.KILLED_WRITER, _why(failures))
                else:
                    result = self.writer.write(part)
            except DatabaseUnavailableError as exc:
                self.metrics.commit_failures_total.inc()
                self.metrics.database_up.set(0)
                self._database.failed("database write failed, will retry: %s", exc)
                parts.append((part, failures))
            except WriterFailedError as exc:
                self.metrics.commit_failures_total.inc()
                if not filing:
                    parts.extend(_after_failure(part, failures, exc))
                    continue
                log.error("%s, filing a dead letter: the writer is what is broken; will retry", exc)
                parts.append((part, 0))  # the message is written again once it works
            else:
                if filing:
                    log.error(
                        "dead-lettered a message on %s as %s", part[0][0], Reason.KILLED_WRITER
                    )
                self._committed(result, len(part), started)
                merge(confirmed, result.confirmed)
                delay = FIRST_RETRY_DELAY_S
                continue
            if self.stopping.wait(delay):
                return None
            delay = min(delay * 2, self.retry_max_s)
        return confirmed

    def _committed(self, result: WriteResult, messages: int, started: float) -> None:
        if self._database.recover():
            log.info("database writes recovered")
        m = self.metrics
        m.database_up.set(1)
        m.commit_seconds.observe(time.perf_counter() - started)
        m.batch_size.observe(messages)
        m.samples_written_total.inc(result.inserted)
        m.samples_duplicate_total.inc(result.attempted - result.inserted)
        m.inventory_history_pruned_total.inc(result.inventory_history_pruned)
        for reason, count in result.dead.items():
            m.dead_letters_total.labels(reason.value).inc(count)
        for lag in result.lags_s:
            m.lag_seconds.observe(lag)


def _after_failure(
    part: list[RawMessage], failures: int, exc: WriterFailedError
) -> list[tuple[list[RawMessage], int]]:
    """What to send after `part` failed the writer once more: the parts, last first."""
    failures += 1
    if failures < FAILURES_BEFORE_SPLIT:
        log.error("%s; writing its %d message(s) again", exc, len(part))
        return [(part, failures)]
    if len(part) == 1:
        log.error("%s; again, with this message alone: filing it as a dead letter", exc)
        return [(part, failures)]
    half = len(part) // 2
    log.error(
        "%s; again, with these %d messages: splitting them (%d + %d) to find which",
        exc,
        len(part),
        half,
        len(part) - half,
    )
    # Each half has failed (within this part) already: it is split at its next failure,
    # so finding one message among n costs about log2(n) failures.
    return [(part[half:], failures - 1), (part[:half], failures - 1)]


def _why(failures: int) -> str:
    return (
        f"the batch writer failed {failures} times with this message, the last time with"
        " it alone (its process died, or writing raised: see the collector's log)"
    )
