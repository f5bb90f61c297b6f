"""Who may read `/metrics`: the allow-list and bearer-token checks (stdlib only: settings import
`parse_allowed` to refuse a malformed `METRICS_ALLOWED_IPS` at start)."""

from __future__ import annotations

import functools
import hmac
import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.cache
def parse_allowed(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """`METRICS_ALLOWED_IPS` entries (addresses or CIDR networks) as networks; ValueError if one is not."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def client_allowed(remote_addr: str, entries: Sequence[str]) -> bool:
    """True when `remote_addr` lies in one of the allow-list's networks."""
    try:
        address = ipaddress.ip_address(remote_addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in parse_allowed(tuple(entries)))


def bearer_matches(header: str, token: str) -> bool:
    """True when `header` is `Bearer <token>` (constant-time comparison)."""
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
