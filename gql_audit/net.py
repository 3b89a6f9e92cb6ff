"""Request id and client address: what the request says, and when to believe it."""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import TYPE_CHECKING

from gql_audit.conf import conf

if TYPE_CHECKING:
    from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: An incoming request id is kept only if it matches: bounded, no separators
#: or control characters that could split a log line or a header.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: ``X-Forwarded-For`` longer than this is not read at all.
MAX_FORWARDED_LENGTH = 2048


def meta_key(header: str) -> str:
    """The ``request.META`` key Django uses for an HTTP header name."""
    return "HTTP_" + header.upper().replace("-", "_")


def request_ids(request: HttpRequest, trusted: bool) -> tuple[str, str | None]:
    """``(request id, client request id)``; ``trusted``: whether the peer is a trusted proxy.

    The incoming ``REQUEST_ID_HEADER`` is the request id only when the peer is
    in ``TRUSTED_PROXIES`` and the value is well formed: any client could
    otherwise reuse another request's id. A well-formed value from any other
    peer is returned second, to be kept beside a new UUID4.
    """
    incoming = request.META.get(meta_key(conf.REQUEST_ID_HEADER))
    if not isinstance(incoming, str) or not REQUEST_ID_PATTERN.fullmatch(incoming):
        return str(uuid.uuid4()), None
    if trusted:
        return incoming, None
    return str(uuid.uuid4()), incoming


def client_port(request: HttpRequest, trusted: bool) -> int | None:
    """The client's port: ``X-Forwarded-Port`` from a trusted proxy (``trusted``), else
    the socket's ``REMOTE_PORT`` (set by gunicorn, uvicorn and most servers), else None."""
    value = request.META.get("HTTP_X_FORWARDED_PORT") if trusted else None
    if value is None:
        value = request.META.get("REMOTE_PORT")
    return valid_port(value)


def valid_port(value: object) -> int | None:
    """``value`` as a TCP port (1 to 65535), or None."""
    if value is None:
        return None
    try:
        port = int(str(value).strip())
    except ValueError:
        return None
    return port if 0 < port < 65536 else None


def parse_ip(value: str | None) -> IPAddress | None:
    """An address from a socket or a forwarded hop (port and brackets removed)."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("["):  # [v6]:port
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # v4:port
        value = value.partition(":")[0]
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id is not None:
            # fe80::1%eth0: the zone names an interface of whoever wrote it, and
            # databases' address types refuse it. The address is what is kept.
            return ipaddress.IPv6Address(value.partition("%")[0])
    return ip


def parse_networks(values: object) -> list[Network]:
    """``TRUSTED_PROXIES`` as networks; raises ValueError on a bad entry."""
    if isinstance(values, str) or not isinstance(values, (list, tuple, set, frozenset)):
        raise ValueError("TRUSTED_PROXIES must be a list of CIDR strings")
    networks = []
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"TRUSTED_PROXIES entry {value!r} is not a string")
        networks.append(ipaddress.ip_network(value.strip(), strict=False))
    return networks


def trusted_networks() -> list[Network]:
    networks: list[Network] = conf.derived("trusted_networks", lambda: parse_networks(conf.TRUSTED_PROXIES))
    return networks


def is_trusted(ip: IPAddress | None) -> bool:
    return ip is not None and any(ip in network for network in trusted_networks())


def peer_is_trusted(request: HttpRequest) -> bool:
    """Whether the socket peer is a proxy whose forwarded headers we believe."""
    return is_trusted(parse_ip(request.META.get("REMOTE_ADDR")))


def client_address(request: HttpRequest, peer: IPAddress | None = None) -> str | None:
    """The client's address.

    ``X-Forwarded-For`` is read only when the socket peer is a trusted proxy,
    and then right to left: each trusted hop vouches for the one before it, and
    the first address not in ``TRUSTED_PROXIES`` is the client. A garbled hop
    stops the walk at the last address that was vouched for. ``peer``: the
    socket peer, when the caller parsed ``REMOTE_ADDR`` already.
    """
    address = peer if peer is not None else parse_ip(request.META.get("REMOTE_ADDR"))
    if not is_trusted(address):
        return str(address) if address is not None else None
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if not forwarded or len(forwarded) > MAX_FORWARDED_LENGTH:
        return str(address)
    for hop in reversed(forwarded.split(",")):
        hop_ip = parse_ip(hop)
        if hop_ip is None:
            break
        address = hop_ip
        if not is_trusted(hop_ip):
            break
    return str(address)
