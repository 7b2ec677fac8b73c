"""Remote debug access: the reverse SSH tunnel's command parameters and reported state.

An admin's OPEN_TUNNEL makes the agent run the OpenSSH client to a bastion the hub names,
with a key the agent made for this alone, and ask the bastion to listen on
`localhost:<remote_port>` and forward what arrives there to the Pi's own sshd: the admin
then reaches the Pi with `ssh -J <bastion> -p <remote_port> <user>@localhost`. The
tunnel closes at `duration_s` and on CLOSE_TUNNEL. Every text here ends up on an `ssh`
command line or in its known_hosts file, so each is a strict pattern: a host name never
starts with `-` (no option injection), a host key is one key type and its base64.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, NotRequired

from pydantic import ConfigDict, Field, StringConstraints, with_config
from typing_extensions import TypedDict

from contract.node_time import NodeTime
from contract.text import STORABLE

DEFAULT_TUNNEL_DURATION = timedelta(minutes=30)
MAX_TUNNEL_DURATION = timedelta(hours=4)
# Long enough to check by hand that it works; the tests open ten-second tunnels.
MIN_TUNNEL_DURATION = timedelta(seconds=10)

# A DNS name or an IPv4 address: letters, digits, dots and dashes, not starting with a
# dash or a dot.
BastionHost = Annotated[
    str, StringConstraints(max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
]
# A POSIX login name, as Debian's adduser accepts it.
BastionUser = Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z_][a-z0-9_-]*$")]
# An SSH public key without its comment: `<type> <base64>` (the bastion's host key, or
# the agent's tunnel key).
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
SshPublicKey = Annotated[
    str,
    StringConstraints(
        max_length=2048,
        pattern=r"^(" + "|".join(SSH_KEY_TYPES) + r") [A-Za-z0-9+/]+={0,3}$",
    ),
]
# Unprivileged: the bastion account cannot bind below 1024 anyway.
RemotePort = Annotated[int, Field(ge=1024, le=65535)]
TunnelSeconds = Annotated[
    int,
    Field(ge=int(MIN_TUNNEL_DURATION.total_seconds()), le=int(MAX_TUNNEL_DURATION.total_seconds())),
]
# Who asked (the admin's email) and why: shown on the node's status page.
Requester = Annotated[str, StringConstraints(min_length=1, max_length=254), STORABLE]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500), STORABLE]

TunnelState = Literal["closed", "opening", "open", "failed"]
TUNNEL_DETAIL_CHARS = 200


# Like the rest of a status: keys a later agent adds are ignored.
@with_config(ConfigDict(extra="ignore"))
class TunnelStatus(TypedDict):
    """The tunnel as the agent reports it in its heartbeat (`NodeStatus.tunnel`) and on
    its status page. `public_key`: the agent's tunnel key (`<type> <base64>`), for the
    bastion's authorized_keys; absent when the tunnel is disabled on the node."""

    state: TunnelState
    until: NotRequired[NodeTime | None]
    remote_port: NotRequired[RemotePort | None]
    bastion: NotRequired[BastionHost | None]
    detail: NotRequired[
        Annotated[str, StringConstraints(max_length=TUNNEL_DETAIL_CHARS), STORABLE] | None
    ]
    public_key: NotRequired[SshPublicKey | None]
