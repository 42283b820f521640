"""bench/delay_proxy.py over real sockets: what the regional-vs-central benchmark
relies on (bytes intact and in order, half-closes forwarded, the delay paid)."""
from __future__ import annotations

import os
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.delay_proxy import DelayProxy  # noqa: E402


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)  # the client's half-close, answered with ours


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo():
    server = EchoServer(("127.0.0.1", 0), EchoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address
    server.shutdown()
    server.server_close()


def proxy_for(address, delay: float) -> DelayProxy:
    return DelayProxy(address, delay=delay).start()


def exchange(port: int, chunks: list[bytes]) -> bytes:
    """Send every chunk while a reader collects the echo; half-close; read to EOF."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        def read() -> None:
            while data := sock.recv(65536):
                received.extend(data)

        reader = threading.Thread(target=read)
        reader.start()
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        reader.join(10)
        assert not reader.is_alive(), "no EOF came back through the proxy"
    return bytes(received)


def test_relays_bytes_intact_and_in_order_both_ways_on_concurrent_connections(echo):
    proxy = proxy_for(echo, delay=0.005)
    try:
        streams = [[os.urandom(size) for size in ([1, 7, 4096, 70000, 300] * 40)] for _ in range(3)]
        results: dict[int, bytes] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, exchange(proxy.port, streams[i])))
                   for i in range(len(streams))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        for i, chunks in enumerate(streams):
            assert results.get(i) == b"".join(chunks), f"connection {i} corrupted or cut"
        assert proxy.connections == len(streams)
    finally:
        proxy.stop()


def test_round_trip_pays_at_least_two_one_way_delays(echo):
    delay = 0.1
    proxy = proxy_for(echo, delay=delay)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            for _ in range(2):  # the first also waits out the emulated handshake
                start = time.monotonic()
                sock.sendall(b"ping")
                assert sock.recv(16) == b"ping"
                assert time.monotonic() - start >= 2 * delay
    finally:
        proxy.stop()


def test_a_changed_delay_applies_to_later_chunks_in_order(echo):
    proxy = proxy_for(echo, delay=0.05)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(b"a" * 1000)
            proxy.delay = 0.0
            sock.sendall(b"b" * 1000)  # due earlier than the first, delivered after it
            got = bytearray()
            while len(got) < 2000:
                got.extend(sock.recv(4096))
            assert bytes(got) == b"a" * 1000 + b"b" * 1000
    finally:
        proxy.stop()


def test_an_unreachable_target_closes_the_client():
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        dead = spare.getsockname()  # bound, not listening: connecting is refused
        proxy = proxy_for(dead, delay=0.0)
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                try:
                    assert sock.recv(16) == b""
                except ConnectionResetError:
                    pass
        finally:
            proxy.stop()
