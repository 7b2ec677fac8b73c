"""Remote debug access from the hub's side: an admin opens a node's reverse SSH tunnel
to the hub's bastion (OPEN_TUNNEL) for a reason and a bounded time, and closes it
(CLOSE_TUNNEL). Both are commands like any other (stored, audited, signed, expiring),
issued only here: the generic command route refuses them. The bastion, its port, login
and pinned host key come from the hub's settings, never from the request.
"""

from __future__ import annotations

from contract.commands import CloseTunnelParams, CommandType, OpenTunnelParams
from control_api import commands
from control_api.config import ApiSettings
from control_api.errors import ConflictError
from control_api.schemas import CommandAcceptedOut, TunnelIn

NO_BASTION = "no bastion is configured (WATTFLEET_TUNNEL_BASTION_HOST): tunnels are off"


def open_tunnel(
    sender: commands.Sender, settings: ApiSettings, body: TunnelIn
) -> CommandAcceptedOut:
    """Issues OPEN_TUNNEL to the sender's node, in the sender's name (`commands.issue`);
    ConflictError when the hub has no bastion."""
    if settings.tunnel_bastion_host is None or settings.tunnel_bastion_host_key is None:
        raise ConflictError(NO_BASTION)
    params = OpenTunnelParams(
        bastion_host=settings.tunnel_bastion_host,
        bastion_port=settings.tunnel_bastion_port,
        bastion_user=settings.tunnel_bastion_user,
        bastion_host_key=settings.tunnel_bastion_host_key,
        remote_port=body.remote_port,
        duration_s=body.duration_s,
        requested_by=sender.user.email,
        reason=body.reason,
    )
    return commands.issue(sender, CommandType.OPEN_TUNNEL, params.model_dump(mode="json"))


def close_tunnel(sender: commands.Sender) -> CommandAcceptedOut:
    """Issues CLOSE_TUNNEL in the sender's name; the node acks "no tunnel was open" when
    there was none."""
    params = CloseTunnelParams(requested_by=sender.user.email)
    return commands.issue(sender, CommandType.CLOSE_TUNNEL, params.model_dump(mode="json"))
