"""Who counts as the Pi itself for its local HTTP servers (the status page's lock
action, the coordinator interface): a loopback peer, and a `Host` header naming the
loopback. The second is what a web page the Pi's browser opens never sends when it
reaches 127.0.0.1 under a name of its own (DNS rebinding), which would make its
requests same-origin and skip the browser's preflight."""

from __future__ import annotations

LOOPBACK_PEERS = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def names_loopback(host_header: str) -> bool:
    """True when a `Host` header (with or without its port) names the loopback."""
    host = host_header.lower()
    if host.startswith("["):
        name = host.split("]")[0] + "]"
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in LOOPBACK_HOSTS
