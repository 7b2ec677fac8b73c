"""Starting, watching and stopping the demo's processes (the test harness uses the same)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The repository these sources were imported from (an editable install or a checkout).
SOURCE_ROOT = Path(__file__).resolve().parents[2]
# EX_TEMPFAIL: the edge agent's "start me again" (RESTART_AGENT, an applied CONFIG_PUSH or
# SELF_UPDATE); its systemd unit restarts it, and so does `Supervised`.
RESTART_EXIT_STATUS = 75


class DemoError(Exception):
    """A service could not start or died while starting; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Polls until `condition()` is truthy (every `interval` s) and returns it; raises
    TimeoutError after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Waits up to `timeout` s until 127.0.0.1:`port` accepts connections; DemoError if
    `proc` exits first."""

    def is_open() -> bool:
        if proc is not None and proc.poll() is not None:
            raise DemoError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(is_open, timeout, f"port {port}")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> int:
    """SIGTERM, then SIGKILL after `timeout` s; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def describe_exit(status: int) -> str:
    if status < 0:
        return f"killed by {signal.Signals(-status).name} (exit code {status})"
    return f"exit code {status}"


def service_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a child service: without `WATTFLEET_*` (a service
    gets exactly the settings it is given) and with these sources first on PYTHONPATH (it
    runs the same code as its parent), plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTFLEET_")}
    env["PYTHONPATH"] = str(SOURCE_ROOT)
    env.update(overrides)
    return env


def settings_env(settings: dict[str, Any]) -> dict[str, str]:
    """Settings by name (`mqtt_port=1883`) as the `WATTFLEET_*` variables services read."""
    return {
        f"WATTFLEET_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in settings.items()
    }


def start_module(
    module: str,
    env: dict[str, str],
    log_path: Path,
    *args: str,
    python: str = sys.executable,
    cwd: Path = SOURCE_ROOT,
) -> subprocess.Popen[bytes]:
    """`python -m module args` with stdout and stderr appended to `log_path`.

    In a session of its own, so a Ctrl-C in the terminal reaches only its parent, which
    stops its children in order. With another interpreter (an installed agent), give a
    `cwd` outside the sources, or `-m` would import them instead of the installed ones."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [python, "-m", module, *args],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextmanager
def stopped_if_not_ready(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """For the wait between starting a process and handing it to whoever stops it: if
    that wait fails or is interrupted (a timeout, Ctrl-C), the process is stopped before
    the error goes on, so no child of the demo outlives it."""
    try:
        yield proc
    except BaseException:
        stop_process(proc)
        raise


class Supervised:
    """A running process watched by a thread: started again through `restart` when it
    exits with status 75, after `restart_delay_s` (as the agent's systemd unit does),
    otherwise reported once
    through `report` (which process, its exit code, where its log is). Exits caused by
    `stop()` are not reported."""

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[Any],
        log_path: Path,
        report: Callable[[str], None],
        restart: Callable[[], subprocess.Popen[Any]] | None = None,
        restart_delay_s: float = 1.0,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.restarts_total = 0
        self._proc = proc
        self._report = report
        self._restart = restart
        # A pause before each restart, so a process that keeps asking for one is not
        # started in a tight loop (the agent's systemd unit waits 5 s).
        self._restart_delay_s = restart_delay_s
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name=f"watch {name}", daemon=True)
        self._watcher.start()

    @property
    def proc(self) -> subprocess.Popen[Any]:
        """The current process (a new one after each restart)."""
        return self._proc

    def _watch(self) -> None:
        while True:
            status = self._proc.wait()
            restart = self._restart if status == RESTART_EXIT_STATUS else None
            if restart is not None and self._stopped.wait(self._restart_delay_s):
                return
            with self._lock:
                if self._stopped.is_set():
                    return
                if restart is not None:
                    self._proc = restart()
                    self.restarts_total += 1
            if restart is None:
                self._report(f"{self.name} died: {describe_exit(status)}; log {self.log_path}")
                return
            self._report(
                f"{self.name} exited asking for a restart (exit code {status}): started "
                f"again (restart {self.restarts_total})"
            )

    def stop(self, timeout: float = 10) -> int:
        """Stops the current process (SIGTERM, then SIGKILL after `timeout` s) and the
        watching; returns the exit status."""
        with self._lock:
            self._stopped.set()
            proc = self._proc
        status = stop_process(proc, timeout)
        self._watcher.join(timeout)
        return status
