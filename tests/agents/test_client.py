"""The agent's HTTP client reads the environment once (not per request) and
still honours it: proxies, NO_PROXY, the CA bundle; a call that meets a kept-alive
connection the server closed under it is sent again at once on a new one."""
import json
import socket
import struct
import threading

import pytest
import requests

from agents.client import RegionClient


def test_proxies_and_ca_bundle_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/private-ca.pem")
    far = RegionClient("http://region.example:8000")
    assert far.session.proxies["http"] == "http://proxy.example:3128"
    assert far.session.verify == "/etc/ssl/private-ca.pem" and far.session.trust_env is False
    assert "http" not in RegionClient("http://127.0.0.1:8000").session.proxies


# --- a kept-alive connection closed just as it is reused ---------------------

class KeepAliveServer:
    """HTTP/1.1 on a real socket: each connection's first `answered` requests get
    a kept-alive answer; the next request on it is read and the connection closed
    without an answer, as a web whose keep-alive timer fires just as an agent
    reuses the connection does. `close` is "reset" (RST: ConnectionResetError
    104, as the agents logged) or "fin" (closed with no response). The
    connection stays open until that request arrives, so the client's check of
    a pooled connection before reusing it sees nothing wrong."""

    def __init__(self, *, answered: int, close: str = "reset"):
        self.answered, self.close = answered, close
        self.connections = self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffered, served = b"", 0
        with conn:
            while True:
                while b"\r\n\r\n" not in buffered:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffered) < length:
                    buffered += conn.recv(65536)
                buffered = buffered[length:]
                self.requests += 1
                if served == self.answered:
                    if self.close == "reset":
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                served += 1
                body = json.dumps({"interval": 5, "desired": "active"}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def keepalive_server():
    servers = []

    def start(**kwargs) -> KeepAliveServer:
        servers.append(KeepAliveServer(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("close", ["reset", "fin"])
def test_heartbeat_on_a_connection_closed_as_it_is_reused_is_sent_again_on_a_new_one(keepalive_server, close):
    server = keepalive_server(answered=1, close=close)
    client = RegionClient(server.url)
    assert client.heartbeat(agent_id="a1", token="t", busy=0)["interval"] == 5
    assert client.heartbeat(agent_id="a1", token="t", busy=0)["interval"] == 5  # reused, closed, sent again
    assert (server.connections, server.requests) == (2, 3)


def test_claims_and_reports_on_a_closed_kept_alive_connection_are_sent_again(keepalive_server):
    server = keepalive_server(answered=1)
    client = RegionClient(server.url)
    client.heartbeat(agent_id="a1", token="t", busy=0)
    client.claim(agent_id="a1", token="t", task_id="t1", attempt=1, claim_id="c1")
    client.report(agent_id="a1", token="t", kind="success", task_id="t1", attempt=1, body={})
    client.deregister(agent_id="a1", token="t")
    assert (server.connections, server.requests) == (4, 7)


def test_a_closed_connection_is_sent_again_once_not_more(keepalive_server):
    server = keepalive_server(answered=0)
    with pytest.raises(requests.ConnectionError):
        RegionClient(server.url).heartbeat(agent_id="a1", token="t", busy=0)
    assert server.requests == 2


def test_a_call_the_region_may_not_answer_twice_alike_is_not_sent_again(keepalive_server):
    """A claim without a claim_id would be refused the second time (already running)."""
    server = keepalive_server(answered=1)
    client = RegionClient(server.url)
    client.heartbeat(agent_id="a1", token="t", busy=0)
    with pytest.raises(requests.ConnectionError):
        client.claim(agent_id="a1", token="t", task_id="t1", attempt=1)
    assert server.requests == 2
