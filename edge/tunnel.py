"""The reverse SSH tunnel for remote debugging (OPEN_TUNNEL, CLOSE_TUNNEL).

The agent runs the OpenSSH client, never a shell: an argument list built from the
command's checked parameters (contract/tunnel.py). It logs in to the bastion with a key
of its own (`tunnel_ed25519` in the state dir, made on first start with
`tunnel_enabled`), trusts only the host key the command pins, and asks the bastion to
listen on `localhost:<remote_port>` and forward to 127.0.0.1:`tunnel_local_port` (the
Pi's sshd). The bastion's authorized_keys line for that key lets it do nothing else
(docs/edge.md). One tunnel at a time: a new OPEN_TUNNEL replaces the open one. It
closes at its expiry, on CLOSE_TUNNEL and when the agent stops; if ssh exits on its own
(the network went away), it is `failed` and stays closed until the next OPEN_TUNNEL.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from contract.commands import OpenTunnelParams
from contract.text import storable
from contract.tunnel import TUNNEL_DETAIL_CHARS, TunnelState

log = logging.getLogger(__name__)

KEY_NAME = "tunnel_ed25519"
KNOWN_HOSTS_NAME = "tunnel_known_hosts"
# The known_hosts entry names the bastion by this alias, not by its address: the pinned
# key is the one for this tunnel whatever host name or port the command gives.
HOST_KEY_ALIAS = "wattfleet-bastion"
# ssh's own answer to the forward request, at `-v` (ssh.c, ssh_confirm_remote_forward).
FORWARD_SUCCESS = "remote forward success"
OPEN_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 15
# A dead network is noticed after about 45 s, and the tunnel is then `failed`.
SERVER_ALIVE_INTERVAL_S = 15
SERVER_ALIVE_COUNT = 3
STOP_TIMEOUT_S = 5.0


class TunnelError(Exception):
    """The tunnel could not be opened, or its key made; the message says why."""


def ensure_key(state_dir: Path, node_id: str, ssh_keygen: str = "ssh-keygen") -> Path:
    """The tunnel's private key in `state_dir`, made (ed25519, no passphrase) if missing."""
    key = state_dir / KEY_NAME
    if key.exists() and key.with_suffix(".pub").exists():
        return key
    state_dir.mkdir(parents=True, exist_ok=True)
    key.unlink(missing_ok=True)
    try:
        subprocess.run(
            [
                ssh_keygen,
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                str(key),
                "-C",
                f"tunnel:{node_id}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise TunnelError(f"cannot make the tunnel key with {ssh_keygen}: {exc}") from exc
    return key


def public_key(key: Path) -> str:
    """`<type> <base64>` of the key's public half (its comment left out)."""
    kind, blob, *_ = key.with_suffix(".pub").read_text().split()
    return f"{kind} {blob}"


def ssh_command(
    params: OpenTunnelParams, key: Path, known_hosts: Path, local_port: int, ssh: str = "ssh"
) -> list[str]:
    """The argument list of the tunnel's ssh: no config file, no agent, no password,
    only the pinned host key, only this one forward, and exit if it is refused."""
    options = {
        "BatchMode": "yes",
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "HostKeyAlias": HOST_KEY_ALIAS,
        "UpdateHostKeys": "no",
        "ExitOnForwardFailure": "yes",
        "ServerAliveInterval": str(SERVER_ALIVE_INTERVAL_S),
        "ServerAliveCountMax": str(SERVER_ALIVE_COUNT),
        "ConnectTimeout": str(CONNECT_TIMEOUT_S),
        "PermitLocalCommand": "no",
    }
    args = [ssh, "-v", "-N", "-T", "-F", "none", "-i", str(key)]
    for name, value in options.items():
        args += ["-o", f"{name}={value}"]
    forward = f"localhost:{params.remote_port}:127.0.0.1:{local_port}"
    destination = ["-p", str(params.bastion_port), "-l", params.bastion_user]
    return [*args, "-R", forward, *destination, "--", params.bastion_host]


class _Session:
    """One ssh process and what it said."""

    def __init__(self, args: list[str], params: OpenTunnelParams) -> None:
        self.params = params
        self.forwarding = threading.Event()
        self.closing = threading.Event()
        self.said: deque[str] = deque(maxlen=20)  # its last lines that are not debug
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        threading.Thread(target=self._read, name="tunnel-ssh-stderr", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.strip()
            if FORWARD_SUCCESS in line:
                self.forwarding.set()
            if line and not line.startswith("debug"):
                self.said.append(line)

    def why_it_ended(self) -> str:
        said = self.said[-1] if self.said else "no message"
        return f"ssh exited with status {self.proc.returncode}: {said}"

    def stop(self) -> None:
        self.closing.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Tunnel:
    """The node's one tunnel and its state, safe to use from any thread."""

    def __init__(
        self,
        node_id: str,
        state_dir: Path,
        local_port: int,
        clock: Callable[[], datetime],
        ssh: str = "ssh",
        ssh_keygen: str = "ssh-keygen",
    ) -> None:
        self.key = ensure_key(state_dir, node_id, ssh_keygen)
        self.public_key = public_key(self.key)
        self.known_hosts = state_dir / KNOWN_HOSTS_NAME
        self.local_port = local_port
        self.clock = clock
        self.ssh = ssh
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._state: TunnelState = "closed"
        self._until: datetime | None = None
        self._detail = ""

    def status(self) -> dict[str, Any]:
        """The contract's TunnelStatus (JSON-ready), for the heartbeat."""
        with self._lock:
            session = self._session
            return {
                "state": self._state,
                "until": self._until.isoformat() if self._until else None,
                "remote_port": session.params.remote_port if session else None,
                "bastion": session.params.bastion_host if session else None,
                "detail": storable(self._detail)[:TUNNEL_DETAIL_CHARS],
                "public_key": self.public_key,
            }

    def snapshot(self) -> dict[str, Any]:
        """The status, with who asked for the tunnel and why: for the local status page."""
        with self._lock:
            params = self._session.params if self._session else None
        return {
            **self.status(),
            "requested_by": params.requested_by if params else None,
            "reason": params.reason if params else None,
        }

    def open(self, params: OpenTunnelParams) -> str:
        """Opens the tunnel (closing one already open) and returns once the bastion
        listens; TunnelError with ssh's own words when it does not within
        OPEN_TIMEOUT_S."""
        self.close(f"replaced by a tunnel for {params.requested_by}")
        kind, blob = params.bastion_host_key.split()
        self.known_hosts.write_text(f"{HOST_KEY_ALIAS} {kind} {blob}\n")
        args = ssh_command(params, self.key, self.known_hosts, self.local_port, self.ssh)
        try:
            session = _Session(args, params)
        except OSError as exc:
            raise TunnelError(f"cannot run {self.ssh}: {exc}") from exc
        self._begin(session, params.bastion_host)
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while not session.forwarding.wait(0.05):
            exited = session.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                session.stop()
                why = session.why_it_ended() if exited else f"no forward in {OPEN_TIMEOUT_S:g} s"
                self._set(session, "failed", None, why)
                raise TunnelError(why)
        until = self.clock() + timedelta(seconds=params.duration_s)
        detail = f"for {params.requested_by}: {params.reason}"
        self._set(session, "open", until, detail)
        threading.Thread(
            target=self._watch,
            args=(session, time.monotonic() + params.duration_s),
            name="tunnel-watch",
            daemon=True,
        ).start()
        log.warning(
            "remote access tunnel open on %s:%d until %s %s",
            params.bastion_host,
            params.remote_port,
            until.isoformat(),
            detail,
        )
        return (
            f"listening on {params.bastion_host} localhost:{params.remote_port}"
            f" until {until.isoformat()}"
        )

    def close(self, why: str) -> bool:
        """Closes the open (or opening) tunnel, if any; True if there was one."""
        with self._lock:
            session = self._session
            if session is None or self._state not in ("open", "opening"):
                return False
        session.stop()
        self._set(session, "closed", None, why)
        log.warning("remote access tunnel closed: %s", why)
        return True

    def _begin(self, session: _Session, bastion: str) -> None:
        with self._lock:
            self._session = session
            self._state, self._until, self._detail = "opening", None, f"to {bastion}"

    def _set(
        self, session: _Session, state: TunnelState, until: datetime | None, detail: str
    ) -> None:
        """The session's new state, unless a newer session replaced it meanwhile."""
        with self._lock:
            if session is self._session:
                self._state, self._until, self._detail = state, until, detail

    def _watch(self, session: _Session, deadline: float) -> None:
        """Ends the session at its expiry, or notes that ssh exited on its own."""
        try:
            session.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if not session.closing.is_set():
                session.stop()
                self._set(session, "closed", None, f"expired at {self.clock().isoformat()}")
                log.warning("remote access tunnel closed: expired")
            return
        if not session.closing.is_set():
            why = session.why_it_ended()
            self._set(session, "failed", None, why)
            log.error("remote access tunnel failed: %s", why)
