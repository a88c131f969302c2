"""The SSRF guard for outgoing requests to user-given URLs (webhooks).

`check_url` resolves the host once and refuses any non-public address (loopback, private,
link-local with the 169.254.169.254 metadata service, CGNAT, multicast, unspecified,
reserved, and IPv4 addresses hidden inside IPv6). The caller then connects to the very
address it checked (`ResolvedTarget.connect_url`, the Host header and TLS SNI keeping the
name), so a second DNS answer cannot point the request elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection

import attrs
import httpx

from runengine.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv6 prefixes that embed an IPv4 address (NAT64), checked as that IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class UnsafeURL(InvalidRequest):
    """A webhook URL that the SSRF guard refuses (scheme, credentials or address)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused webhook URL: {reason}", url=url, reason=reason)
        self.reason = reason


@attrs.frozen(kw_only=True)
class ResolvedTarget:
    """A checked URL: where to connect (`address`) and what to call it (`host`)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    #: Path and query, as sent in the request line.
    target: str

    def connect_url(self) -> str:
        """The URL with the host replaced by the checked address."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}{self.target}"

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def _parse_allowed(entries: Collection[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return frozenset(names), tuple(networks)


def forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"IPv4 address inside IPv6 is {inner}" if inner else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("carrier-grade NAT", isinstance(address, ipaddress.IPv4Address) and address in _CGNAT),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    for reason, hit in checks:
        if hit:
            return reason
    return None


def check_url(
    url: str, *, allow_hosts: Collection[str] = (), allow_private: bool = False
) -> ResolvedTarget:
    """Parse and resolve `url`; raise UnsafeURL unless every address it resolves to is allowed.

    `allow_hosts` holds host names, IP addresses or networks (CIDR) that are allowed
    whatever their address (tests, private deployments); `allow_private` allows every
    loopback / private / link-local / CGNAT address but never an unspecified or
    multicast one. Resolution blocks: call it from a worker thread in async code.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeURL(str(url), "the URL must be a non-empty string")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeURL(url, f"malformed URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURL(url, "only http and https URLs are allowed")
    if parsed.userinfo:
        raise UnsafeURL(url, "credentials in the URL are not allowed")
    host = parsed.host.lower().rstrip(".")
    if not host:
        raise UnsafeURL(url, "the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    names, networks = _parse_allowed(allow_hosts)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise UnsafeURL(url, f"cannot resolve host {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        address = ipaddress.ip_address(raw)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeURL(url, f"host {host!r} has no address")
    for address in addresses:
        if host in names or any(address in net for net in networks):
            continue
        reason = forbidden_reason(address)
        if reason is None:
            continue
        if allow_private and not (address.is_unspecified or address.is_multicast):
            continue
        raise UnsafeURL(url, f"{host} resolves to {address}, which is {reason}")
    target = parsed.raw_path.decode("ascii")
    return ResolvedTarget(
        url=url, scheme=parsed.scheme, host=host, port=port, address=str(addresses[0]), target=target or "/"
    )


__all__ = ["ResolvedTarget", "UnsafeURL", "check_url", "forbidden_reason"]
