"""Redis behind Sentinel: ``BACKLANE_REDIS_URL=redis+sentinel://[user:password@]host:port[,host:port…]/service``.

The sentinels are asked which server is the master of ``service``; every connection (the pool, each
hub reader's own, the pub/sub listener's) asks again when it connects, so after a failover the next
connection reaches the new master. A connection still open to the old master is dropped when that
one answers READONLY (it came back as a replica), and the command is sent again through
``shared/ride_through.py``'s rules (a worker) or answered 503 (the API).

    redis+sentinel://s1:26379,s2:26379,s3:26379/backlane?db=0
                     └── sentinels (port 26379 when left out) ┘ └ service (``sentinel monitor <name>``)

The user and password, when given, are the Redis servers' (the sentinels are asked without them).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

SCHEME = "redis+sentinel://"
DEFAULT_PORT = 26379


class SentinelUrlError(ValueError):
    """A ``redis+sentinel://`` URL that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    #: the name the sentinels monitor the master by
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SCHEME)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL; ``SentinelUrlError`` naming the first problem."""
    if not is_sentinel_url(url):
        raise SentinelUrlError(f"expected {SCHEME}host:port[,host:port…]/service")
    rest = url[len(SCHEME):]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    sentinels = tuple(_host_port(part.strip()) for part in hosts.split(","))
    service = unquote(path.strip("/")) if slash else ""
    if not service or "/" in service:
        raise SentinelUrlError("name the master's service after the hosts: …/service_name")
    db = 0
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name != "db":
            raise SentinelUrlError(f"unknown option {name!r} (only db=N is understood)")
        if not values[-1].isdigit():
            raise SentinelUrlError(f"db must be a non-negative number, got {values[-1]!r}")
        db = int(values[-1])
    return SentinelUrl(sentinels, service, db, username, password)


def _host_port(part: str) -> tuple[str, int]:
    if not part:
        raise SentinelUrlError("a sentinel address is empty: list them as host:port,host:port")
    if part.startswith("["):  # [IPv6]:port
        host, _, tail = part[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, colon, port_text = part.rpartition(":")
        if not colon:
            host, port_text = part, ""
    if not host:
        raise SentinelUrlError(f"sentinel address {part!r} has no host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise SentinelUrlError(f"sentinel address {part!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)
