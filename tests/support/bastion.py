"""A bastion for tunnel tests: Debian's OpenSSH server (`sshd -D`) on a free port on
127.0.0.1, with a host key and an authorized_keys of its own, configured as
docs/edge.md tells an operator to; and a TCP echo server standing in for the Pi's sshd."""

from __future__ import annotations

import getpass
import os
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.services import free_port, stop_process, wait_for_port

SSHD = Path("/usr/sbin/sshd")
# sshd refuses to start without its privilege separation directory, which Debian makes
# only when the service starts.
PRIVSEP_DIR = Path("/run/sshd")


@dataclass
class Bastion:
    port: int
    user: str
    host_key: str  # `<type> <base64>`, as OPEN_TUNNEL pins it
    authorized_keys: Path

    def authorize(self, public_key: str, remote_port: int) -> None:
        """Lets `public_key` open one remote forward, on localhost:`remote_port`, and
        nothing else (docs/edge.md, "The bastion")."""
        options = (
            f'restrict,port-forwarding,permitlisten="localhost:{remote_port}",command="/bin/false"'
        )
        self.authorized_keys.write_text(f"{options} {public_key}\n")


@contextmanager
def bastion(tmp_path: Path) -> Iterator[Bastion]:
    if not SSHD.exists():
        pytest.skip("openssh-server is not installed (tests/support/bootstrap.sh)")
    if not PRIVSEP_DIR.exists():
        if os.geteuid() != 0:
            pytest.skip(f"{PRIVSEP_DIR} is missing and only root can make it")
        PRIVSEP_DIR.mkdir(mode=0o755)
    folder = tmp_path / "bastion"
    folder.mkdir()
    host_key = folder / "ssh_host_ed25519_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
        check=True,
        capture_output=True,
    )
    authorized_keys = folder / "authorized_keys"
    authorized_keys.write_text("")
    port = free_port()
    user = getpass.getuser()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized_keys}",
                f"AllowUsers {user}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                # The test's files live under pytest's tmp_path, not a home directory.
                "StrictModes no",
                "AllowTcpForwarding remote",
                "GatewayPorts no",
                "X11Forwarding no",
                "PermitTTY no",
                "LogLevel VERBOSE",
            ]
        )
        + "\n"
    )
    log = (folder / "sshd.log").open("w")
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, 10, proc)
        kind, blob, *_ = host_key.with_suffix(".pub").read_text().split()
        yield Bastion(port, user, f"{kind} {blob}", authorized_keys)
    finally:
        stop_process(proc)
        log.close()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@contextmanager
def echo_server() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1 (its port), where the tunnel's forward leads."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def echoes(port: int, data: bytes = b"through the tunnel") -> bool:
    """True when 127.0.0.1:`port` answers `data` with `data`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += chunk
            return got == data
    except OSError:
        return False


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
