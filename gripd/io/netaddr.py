"""Socket address checks shared by the listeners and observers."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a socket name's address, an IPv6 zone after ``%`` allowed) is a
    loopback address; an IPv4-mapped IPv6 address counts as its IPv4 address (Python < 3.13
    says no for ``::ffff:127.0.0.1``). Anything that is not an IP address is not loopback."""
    try:
        addr = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback
