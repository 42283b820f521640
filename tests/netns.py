"""Linux network namespaces for the fault tier: each process of a region (or the
router) on a host of its own, with its own address, joined by veth links.

    with Lab() as lab:                       # a private 10.N.0.0/24, cleaned up always
        web = lab.host("euw")                # a namespace, linked to the hub
        proc = lab.spawn(web, region._spawn, "web", [...])   # or lab.exec_args(web, args)
        lab.link_down(web); lab.link_up(web) # the cable pulled out, and back
        lab.block(a, b); lab.unblock(a, b)   # no route between two hosts, both ways
        proxy = lab.proxy(5432)              # a TcpProxy on the root side: lab.root_ip:proxy.port

Topology: a star. A "hub" namespace forwards IPv4 (net.ipv4.ip_forward there,
never in the root namespace) between point-to-point veth links, one /30 per
host; the root namespace is one more host on the hub, so the machine's
PostgreSQL, Redis and RabbitMQ stay where they are and are reached through
TcpProxy instances listening on the root side's address. A routed hub (no
bridge) means a frame goes only down the link towards its destination: a
capture on one host's link sees that host's traffic and nothing flooded.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from tests.faults import TcpProxy

CLONE_NEWNET = 0x40000000


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    return out


def unavailable() -> str | None:
    """Why this machine cannot run the tier, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    name = f"mnprobe{uuid.uuid4().hex[:6]}"
    try:
        out = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns add failed: {exc}"
    if out.returncode:
        return f"ip netns add failed: {out.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    return None


def _free_subnet() -> int:
    """A 10.N.0.0/24 no interface or route of this machine uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout \
        + subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    start = os.getpid() % 150
    for i in range(150):
        n = 100 + (start + i) % 150
        if f" 10.{n}." not in used:
            return n
    raise RuntimeError("no free 10.N.0.0/24 for a network lab")


@dataclass
class Host:
    name: str       # the namespace
    ip: str         # its address
    veth: str       # the hub's end of its link (in the hub namespace)
    gateway: str    # the hub's address on that link


class Lab:
    def __init__(self):
        self.tag = uuid.uuid4().hex[:4]
        self.net = _free_subnet()
        self.hub = f"mn{self.tag}hub"
        self.hosts: dict[str, Host] = {}
        self.proxies: list[TcpProxy] = []
        self._links = 0
        self._made: list[str] = []    # namespaces
        self.root: Host | None = None

    # --- building ---------------------------------------------------------------
    def __enter__(self) -> "Lab":
        try:
            ip("netns", "add", self.hub)
            self._made.append(self.hub)
            ip("link", "set", "lo", "up", ns=self.hub)
            subprocess.run(["ip", "netns", "exec", self.hub, "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
            self.root = self._link(None, "root")
            ip("route", "add", f"10.{self.net}.0.0/24", "via", self.root.gateway)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def root_ip(self) -> str:
        return self.root.ip

    def _link(self, ns: str | None, label: str) -> Host:
        i = self._links
        self._links += 1
        if i >= 63:
            raise RuntimeError("a lab holds at most 63 links")
        gateway, address = f"10.{self.net}.0.{4 * i + 1}", f"10.{self.net}.0.{4 * i + 2}"
        hub_end, host_end = f"mn{self.tag}h{i}", f"mn{self.tag}n{i}"
        ip("link", "add", hub_end, "type", "veth", "peer", "name", host_end)
        try:
            ip("link", "set", hub_end, "netns", self.hub)
            if ns:
                ip("link", "set", host_end, "netns", ns)
        except RuntimeError:
            ip("link", "del", hub_end, check=False)
            ip("link", "del", host_end, check=False)
            raise
        ip("addr", "add", f"{gateway}/30", "dev", hub_end, ns=self.hub)
        ip("link", "set", hub_end, "up", ns=self.hub)
        ip("addr", "add", f"{address}/30", "dev", host_end, ns=ns)
        ip("link", "set", host_end, "up", ns=ns)
        return Host(name=ns or "", ip=address, veth=hub_end, gateway=gateway)

    def host(self, label: str) -> Host:
        """A namespace of its own, linked to the hub, default route through it."""
        ns = f"mn{self.tag}{label}"[:15]
        ip("netns", "add", ns)
        self._made.append(ns)
        ip("link", "set", "lo", "up", ns=ns)
        host = self._link(ns, label)
        ip("route", "add", "default", "via", host.gateway, ns=ns)
        self.hosts[label] = host
        return host

    def proxy(self, port: int, host: str = "127.0.0.1") -> TcpProxy:
        """A TCP proxy on the root side of the lab (lab.root_ip:proxy.port) to a
        service of the root namespace."""
        proxy = TcpProxy(host, port, listen_host=self.root_ip)
        self.proxies.append(proxy)
        return proxy

    @staticmethod
    def exec_args(host: Host, args: list[str]) -> list[str]:
        """A command run in the host's namespace (ip netns exec execs it: same pid)."""
        return ["ip", "netns", "exec", host.name, *args]

    # --- faults -----------------------------------------------------------------
    def link_down(self, host: Host) -> None:
        """The host's cable pulled out: its end of the link in the hub goes down."""
        ip("link", "set", host.veth, "down", ns=self.hub)

    def link_up(self, host: Host) -> None:
        ip("link", "set", host.veth, "up", ns=self.hub)

    def block(self, a: Host, b: Host) -> None:
        """No route between two hosts, either way (each drops what it would send
        the other); their links to everything else stay up."""
        ip("route", "add", "blackhole", b.ip, ns=a.name)
        ip("route", "add", "blackhole", a.ip, ns=b.name)

    def unblock(self, a: Host, b: Host) -> None:
        ip("route", "del", "blackhole", b.ip, ns=a.name, check=False)
        ip("route", "del", "blackhole", a.ip, ns=b.name, check=False)

    # --- teardown -------------------------------------------------------------------
    def close(self) -> None:
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                proxy.close()
        self.proxies.clear()
        # The root's end of its link (and the route through it) by name; deleting a
        # namespace deletes the veths in it, and with them their peers.
        if self.root is not None:
            subprocess.run(["ip", "link", "del", f"mn{self.tag}n0"], capture_output=True, timeout=30)
            self.root = None
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._made.clear()


# --- capture ----------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(name: str) -> None:
    """Move the calling thread into a named network namespace."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Capture:
    """Every IPv4/TCP payload byte crossing some interfaces, read with an AF_PACKET
    socket per interface (opened in the interface's namespace, on a thread of its
    own). Payloads are kept per TCP direction, in arrival order, so a marker split
    over two segments is still found.

        with Capture(lab.hub, [host.veth, ...]) as cap: ...
        cap.seen(b"marker") -> the interfaces where it crossed
    """

    def __init__(self, ns: str, interfaces: list[str]):
        self.ns = ns
        self.interfaces = interfaces
        self.streams: dict[tuple, bytearray] = defaultdict(bytearray)  # (iface, src, sport, dst, dport)
        self.frames = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ready: list[threading.Event] = []
        self._errors: list[BaseException] = []

    def __enter__(self) -> "Capture":
        for iface in self.interfaces:
            ready = threading.Event()
            thread = threading.Thread(target=self._read, args=(iface, ready), daemon=True, name=f"capture-{iface}")
            thread.start()
            self._threads.append(thread)
            self._ready.append(ready)
        for ready in self._ready:
            if not ready.wait(10):
                raise RuntimeError("a capture socket did not open")
        if self._errors:
            raise self._errors[0]
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _read(self, iface: str, ready: threading.Event) -> None:
        try:
            _enter_netns(self.ns)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))  # ETH_P_ALL
            sock.bind((iface, 0))
            sock.settimeout(0.2)
        except BaseException as exc:  # noqa: BLE001 (reported by __enter__)
            self._errors.append(exc)
            ready.set()
            return
        ready.set()
        with sock:
            while not self._stop.is_set():
                try:
                    frame = sock.recv(262144)
                except socket.timeout:
                    continue
                except OSError:
                    if self._stop.is_set():
                        return
                    time.sleep(0.05)  # the link went down under us: wait for it
                    continue
                self._take(iface, frame)

    def _take(self, iface: str, frame: bytes) -> None:
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            return
        ip_header = frame[14:]
        ihl = (ip_header[0] & 0x0F) * 4
        if ip_header[9] != 6:  # TCP only
            return
        total = struct.unpack("!H", ip_header[2:4])[0]
        src, dst = socket.inet_ntoa(ip_header[12:16]), socket.inet_ntoa(ip_header[16:20])
        tcp = ip_header[ihl:total]
        if len(tcp) < 20:
            return
        sport, dport = struct.unpack("!HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4:]
        with self._lock:
            self.frames += 1
            if payload:
                self.streams[(iface, src, sport, dst, dport)] += payload

    def seen(self, marker: bytes) -> set[str]:
        """The interfaces on which the marker crossed (in either direction)."""
        with self._lock:
            return {key[0] for key, data in self.streams.items() if marker in data}

    def where(self, marker: bytes) -> list[tuple]:
        with self._lock:
            return [key for key, data in self.streams.items() if marker in data]

    def total_bytes(self) -> int:
        with self._lock:
            return sum(len(d) for d in self.streams.values())
