"""A batch writer process for tests that fails on purpose: `serve_with_poison` is the
production `serve` over a pipe that makes marked messages poison. Given to
`WriterProcess(settings, target=serve_with_poison)`, it lets a test drive the intake's
poison rule (collector/committer.py) with a process that really dies, now that no known
payload kills the real one. Here, not in the test module: the spawned child imports it.
"""

from __future__ import annotations

import os
import signal
from multiprocessing.connection import Connection
from typing import Any, cast

from collector.config import CollectorSettings
from collector.writer_process import serve

# A batch holding a payload with this text kills the writer process (SIGKILL) as it
# arrives; one with the other makes writing it raise, inside the writer's loop.
KILLS_THE_WRITER = b"KILLS-THE-WRITER"
RAISES_IN_THE_WRITER = b"RAISES-IN-THE-WRITER"


class _Raising(bytes):
    """A payload whose first inspection by the decoder raises."""

    def startswith(self, *_args: Any) -> bool:
        raise RuntimeError("a payload no check foresaw")


class _PoisonedPipe:
    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe

    def recv(self) -> Any:
        request = self._pipe.recv()
        if isinstance(request, list):
            if any(KILLS_THE_WRITER in payload for _, payload, _ in request):
                os.kill(os.getpid(), signal.SIGKILL)
            request = [
                (topic, _Raising(payload) if RAISES_IN_THE_WRITER in payload else payload, at)
                for topic, payload, at in request
            ]
        return request

    def send(self, reply: Any) -> None:
        self._pipe.send(reply)


def serve_with_poison(settings: CollectorSettings, pipe: Connection) -> None:
    serve(settings, cast(Connection, _PoisonedPipe(pipe)))
