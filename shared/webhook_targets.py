"""Which hosts a webhook may be sent to: public addresses only.

A webhook URL makes the server send a request wherever a tenant says. Left open, it reaches the
cloud metadata service (169.254.169.254), Redis on loopback or an admin port on the private network.
So a target in a loopback, private, link-local, unspecified, multicast, reserved or shared (CGNAT)
range is refused, also when written as an IPv4-mapped or 6to4 IPv6 address. The API checks a URL
when a job names it; the supervisor checks again right before it connects and then connects to the
address it checked, since a name may resolve elsewhere by then (DNS rebinding).
``BACKLANE_WEBHOOK_ALLOW_PRIVATE=1`` turns every check off (``backlane dev`` does by default).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

__all__ = [
    "RESOLVE_TIMEOUT_S", "IPAddress", "RefusedTarget", "check_literal", "checked_addresses", "refusal", "resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: the longest a name may take to resolve before its URL is refused (submit) or its delivery fails
RESOLVE_TIMEOUT_S = 3.0
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
METADATA = ipaddress.ip_address("169.254.169.254")
HINT = "webhook targets must be public addresses (BACKLANE_WEBHOOK_ALLOW_PRIVATE=1 on the server allows others)"


class RefusedTarget(ValueError):
    """A webhook URL whose host is, or resolves to, an address it may not be sent to."""


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` may not receive webhooks, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            why = refusal(embedded)
            return None if why is None else f"{why}, written as IPv6"
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address == METADATA:
        return "link-local: the cloud metadata address"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address in SHARED_ADDRESS_SPACE:
        return "shared address space (CGNAT, 100.64.0.0/10)"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally reachable"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _refuse(host: str, address: IPAddress, why: str) -> RefusedTarget:
    shown = f"{host!r}" if str(address) == host else f"{host!r} resolves to {address}, which"
    return RefusedTarget(f"webhook_url host {shown} is {why}: {HINT}")


def check_literal(url: str, *, allow_private: bool = False) -> None:
    """The checks that need no DNS: the scheme and port, and the host when it is an IP address."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed "[" of an IPv6 host, for one
        raise RefusedTarget(f"webhook_url {url!r} is not a URL that can be read") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusedTarget(f"webhook_url {url!r} must be an absolute http:// or https:// URL")
    try:
        parts.port  # noqa: B018 (it raises on a port out of range)
    except ValueError:
        raise RefusedTarget(f"webhook_url {url!r} has an invalid port") from None
    address = None if allow_private else _literal(parts.hostname)
    why = None if address is None else refusal(address)
    if address is not None and why is not None:
        raise _refuse(parts.hostname, address, why)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order (tests replace this)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # an IPv6 sockaddr may carry a zone ("fe80::1%eth0"): the address is what is checked
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


async def checked_addresses(url: str) -> list[IPAddress]:
    """The addresses the URL's host resolves to, all of them allowed; else RefusedTarget saying why.

    A name is refused when any one of its addresses is: a resolver may hand out any of them later.
    """
    check_literal(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            addresses = await resolve(host, port)
    except TimeoutError:
        raise RefusedTarget(f"webhook_url host {host!r} did not resolve within {RESOLVE_TIMEOUT_S:g} s") from None
    except (OSError, ValueError) as exc:
        raise RefusedTarget(f"webhook_url host {host!r} does not resolve: {exc}") from None
    if not addresses:
        raise RefusedTarget(f"webhook_url host {host!r} does not resolve to any address")
    for address in addresses:
        why = refusal(address)
        if why is not None:
            raise _refuse(host, address, why)
    return addresses
