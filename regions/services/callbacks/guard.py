"""The SSRF guard of completion callbacks: the region calls only the hosts its
configuration allows (callbacks.allowed_hosts), and only at addresses that are
safe whatever DNS says at delivery time: resolve, check every address, then
connect to an address that was checked (deliver.py pins it).

An entry of callbacks.allowed_hosts is a host name (any port), host:port, an
address (or [v6]:port), or a CIDR. A URL's host must be named by an entry (an
address literal may also fall in a CIDR). Its resolved addresses must then be
public, or be covered by a CIDR or named exactly: loopback, private, shared
(100.64/10), unique-local and local-use NAT64 addresses are refused otherwise.
An IPv6 address that leads to an IPv4 one (NAT64 64:ff9b::/96, SIIT, 6to4,
IPv4-compatible) is checked as that IPv4 address too. Never allowed,
whatever the list says: link-local (169.254/16, fe80::/10), the cloud metadata
addresses, unspecified, multicast and reserved addresses, and the region's own
services (its web, database, Redis and broker ports)."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings

from regions.services.config.current import config_current

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
            ipaddress.ip_address("100.100.100.200")}  # AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba
SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not the public internet
# IPv6 addresses that carry an IPv4 address in their last 32 bits, which a
# translator (NAT64 with DNS64, SIIT) or the host reaches: checked as that IPv4
# address too (64:ff9b::a9fe:a9fe is the metadata service behind NAT64).
CARRIES_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::ffff:0:0:0/96"),
                ipaddress.ip_network("::/96"))
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: an operator's own translator, any prefix length
URL_MAX = 2048


class DeliveryRefused(Exception):
    """The guard refuses this URL or an address it resolves to."""


@dataclass(frozen=True)
class AllowList:
    names: dict[str, frozenset[int] | None]  # host name or address literal -> ports (None: any)
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @property
    def empty(self) -> bool:
        return not self.names and not self.networks


@dataclass(frozen=True)
class Target:
    """Where a delivery connects: a checked address, and the name it speaks to."""

    scheme: str
    address: str
    port: int
    host: str  # the URL's host name: Host header and TLS server name
    host_header: str
    path: str


def _normal(ip: IPAddress) -> IPAddress:
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def _literal(host: str) -> IPAddress | None:
    try:
        return _normal(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def allowed_host_problem(entry: str) -> str | None:
    """What is wrong with an entry of callbacks.allowed_hosts (sync_config
    refuses the configuration), or None."""
    try:
        allow_list([entry], strict=True)
    except ValueError as exc:
        return str(exc) or "not a host, host:port, address or CIDR"
    return None


def allow_list(entries, *, strict: bool = False) -> AllowList:
    """The entries parsed; one that does not parse is skipped (sync_config
    refused it already) unless strict."""
    names: dict[str, set[int] | None] = {}
    networks = []
    for raw in entries or ():
        try:
            _entry_add(str(raw).strip().lower().rstrip("."), names, networks)
        except ValueError:
            if strict:
                raise
    return AllowList({k: (None if v is None else frozenset(v)) for k, v in names.items()}, tuple(networks))


def _entry_add(entry: str, names: dict, networks: list) -> None:
    if "/" in entry:
        networks.append(ipaddress.ip_network(entry, strict=False))
        return
    host, port = entry, None
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else None
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        port = int(port_text)
    if not host or (port is not None and not 0 < port < 65536):
        raise ValueError("not a host, host:port, address or CIDR")
    literal = _literal(host)
    key = str(literal) if literal else host
    if port is None:
        names[key] = None
    elif names.get(key, set()) is not None:
        names.setdefault(key, set()).add(port)


def allowed_hosts() -> AllowList:
    return allow_list(config_current().content.get("callbacks", {}).get("allowed_hosts"))


def _named(allowed: AllowList, key: str, port: int) -> bool:
    if key not in allowed.names:
        return False
    ports = allowed.names[key]
    return ports is None or port in ports


def _parts(url: str):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryRefused("callback_url must be an http or https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise DeliveryRefused("callback_url must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DeliveryRefused("callback_url has an invalid port") from None
    return parts, parts.hostname.lower().rstrip("."), port


def url_refusal(url: str, allowed: AllowList | None = None) -> str | None:
    """Why the configuration does not allow this callback URL, or None (at
    submission, and again at delivery: the configuration may have changed)."""
    allowed = allowed_hosts() if allowed is None else allowed
    try:
        _, host, port = _parts(url)
    except DeliveryRefused as exc:
        return str(exc)
    if allowed.empty:
        return (f"callbacks are not allowed in region {settings.REGION_ID}: its configuration's "
                "callbacks.allowed_hosts is empty")
    literal = _literal(host)
    if literal is not None:
        never = _never(literal, port)
        if never:
            return f"callback_url {host}: {never}"
        if _named(allowed, str(literal), port) or any(literal in net for net in allowed.networks
                                                       if net.version == literal.version):
            return None
    elif _named(allowed, host, port):
        return None
    return f"callback_url host {host}:{port} is not in callbacks.allowed_hosts of region {settings.REGION_ID}"


def _never(ip: IPAddress, port: int) -> str | None:
    """What no allow-list entry makes callable."""
    if ip in METADATA:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_unspecified or ip.is_multicast or (ip.is_reserved and ip.version == 4):
        return f"{ip} is not a unicast address"
    if port in own_ports() and (ip.is_loopback or ip in own_addresses()):
        return f"{ip}:{port} is one of the region's own services"
    return None


def _carried(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (NAT64, SIIT, IPv4-compatible,
    6to4), or None."""
    if ip.version != 6 or ip.is_unspecified or ip.is_loopback:
        return None
    if any(ip in net for net in CARRIES_IPV4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_refusal(ip: IPAddress, port: int, allowed: AllowList) -> str | None:
    """Why the region must not connect to this resolved address, or None."""
    ip = _normal(ip)
    carried = _carried(ip)
    if carried is not None:
        why = address_refusal(carried, port, allowed)
        if why:
            return f"{ip}, which leads to {why}"
    never = _never(ip, port)
    if never:
        return never
    internal = ("loopback" if ip.is_loopback else "private" if ip.is_private
                else "shared (carrier-grade NAT)" if ip in SHARED
                else "local-use NAT64 (any IPv4 address behind it)" if ip in LOCAL_NAT64 else None)
    if internal is None:
        return None
    if _named(allowed, str(ip), port) or any(ip in net for net in allowed.networks if net.version == ip.version):
        return None
    return f"{ip} is a {internal} address not allowed by a CIDR of callbacks.allowed_hosts"


def resolve(host: str, port: int) -> list[str]:
    """Every address the name has now (tests replace this)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def pinned_targets(url: str) -> list[Target]:
    """The checked addresses to connect to for this URL, in the resolver's
    order; DeliveryRefused when the URL or any address it resolves to is not
    allowed (one bad address among good ones refuses them all: a rebinding
    attacker's DNS answers both). OSError when the name does not resolve."""
    allowed = allowed_hosts()
    refusal = url_refusal(url, allowed)
    if refusal:
        raise DeliveryRefused(refusal)
    parts, host, port = _parts(url)
    literal = _literal(host)
    addresses = [str(literal)] if literal else resolve(host, port)
    if not addresses:
        raise OSError(f"{host} has no address")
    targets = []
    for text in addresses:
        ip = _normal(ipaddress.ip_address(text.split("%")[0]))
        why = address_refusal(ip, port, allowed)
        if why:
            raise DeliveryRefused(f"{host} resolves to {why}")
        default = 443 if parts.scheme == "https" else 80
        host_header = (f"[{host}]" if literal and literal.version == 6 else host) + (
            f":{port}" if port != default else "")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        targets.append(Target(parts.scheme, str(ip), port, host, host_header, path))
    return targets


def _port_of(url: str, default: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        return (parts.hostname or "127.0.0.1"), (parts.port or default)
    except ValueError:
        return None


@lru_cache(maxsize=1)
def _own() -> tuple[tuple[int, ...], frozenset]:
    db = settings.DATABASES.get("default", {})
    endpoints = [_port_of(settings.REGION_URL, 443 if settings.REGION_URL.startswith("https") else 80),
                 (db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)),
                 _port_of(settings.REDIS_URL, 6379), _port_of(settings.CELERY_BROKER_URL, 5672),
                 _port_of(getattr(settings, "AGENT_BROKER_URL", ""), 5672)]
    ports, addresses = [], set()
    for endpoint in endpoints:
        if not endpoint:
            continue
        host, port = endpoint
        if port not in ports:
            ports.append(port)
        try:
            addresses.update(_normal(ipaddress.ip_address(a.split("%")[0])) for a in resolve(host, port))
        except OSError:
            pass
    return tuple(ports), frozenset(addresses)


def own_ports() -> tuple[int, ...]:
    """The ports of the region's own services (its web first)."""
    return _own()[0]


def own_addresses() -> frozenset:
    return _own()[1]
