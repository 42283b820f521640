"""A web worker runs ready requests round robin by caller (project/turns.py)."""
import asyncio
import base64
import time

import pytest

from project.accounts.assertions import FORWARD, assertion_sign, keypair_generate, private_key_load
from project.asgi import wsgi_after_body
from project.turns import FairTurns, flow_of


def _run_all(coroutines):
    async def main():
        return await asyncio.gather(*coroutines)
    return asyncio.run(main())


def test_a_callers_request_waits_for_one_of_each_other_busy_caller_not_for_all_their_queue():
    turns, order = FairTurns(), []

    async def request(flow: bytes, name: str):
        async with turns.turn(flow):
            order.append(name)

    _run_all([request(b"A", f"a{i}") for i in range(4)] + [request(b"B", "b0"), request(b"C", "c0")])
    assert order == ["a0", "b0", "c0", "a1", "a2", "a3"]
    assert turns.waiting == 0


def test_a_flow_that_used_the_worker_longer_waits_while_others_short_requests_run():
    turns, order = FairTurns(), []

    async def request(flow: bytes, name: str, seconds: float):
        async with turns.turn(flow):
            order.append(name)
            time.sleep(seconds)  # a view runs in the loop: it blocks it for its length

    _run_all([request(b"A", f"a{i}", 0.05) for i in range(3)] + [request(b"C", f"c{i}", 0) for i in range(3)])
    assert order == ["a0", "c0", "c1", "c2", "a1", "a2"]
    assert not turns._used and not turns._lines  # nothing kept for idle flows


def test_a_request_cancelled_while_it_waits_or_once_given_its_turn_never_stalls_the_rest():
    turns, order = FairTurns(), []

    async def request(flow: bytes, name: str):
        async with turns.turn(flow):
            order.append(name)

    async def main():
        doomed = [asyncio.ensure_future(request(b"A", "gone")), asyncio.ensure_future(request(b"B", "gone too"))]
        others = [asyncio.ensure_future(request(b"C", f"c{i}")) for i in range(3)]
        await asyncio.sleep(0)  # all joined their lines; A's is picked first
        for task in doomed:
            task.cancel()
        await asyncio.wait_for(asyncio.gather(*others), 5)

    asyncio.run(main())
    assert order == ["c0", "c1", "c2"]
    assert not turns._used and not turns._lines and not turns._busy


def test_the_flow_is_the_credential_else_the_address(settings):
    assert flow_of({"headers": [(b"authorization", b"Bearer mk_" + b"x" * 100)], "client": ("10.0.0.1", 5)}) \
        == (b"Bearer mk_" + b"x" * 100)[:48]
    assert flow_of({"headers": [], "client": ("10.0.0.1", 5)}) == b"10.0.0.1"
    # Every forwarded request carries a new assertion; its caller, when the
    # router signed it, is the flow; anyone else's is the sender's address.
    private, public = keypair_generate()
    settings.ROUTER_PUBLIC_KEYS = [public]

    def forwarded(key, subject="ada") -> dict:
        return {"headers": [(b"authorization", b"Bearer " + assertion_sign(
            key=key, audience="eu-1", subject=subject, purpose=FORWARD, ttl=30, scopes=["tasks:submit"],
            body=b"{}", method="POST", path="/api/v1/tasks").encode())], "client": ("10.0.0.9", 5)}

    assert {flow_of(forwarded(private_key_load(private))) for _ in range(3)} == {b"router:ada"}
    forger = private_key_load(keypair_generate()[0])
    assert flow_of(forwarded(forger, subject="victim")) == b"10.0.0.9"  # no place in the victim's line


@pytest.mark.parametrize("claims", [b"[" * 3000, b"{" * 5000, b'{"sub": ' + b"[" * 3000 + b"]" * 3000 + b"}",
                                    b"x" * 200_000, b'{"sub": "ada"}'])
def test_a_forged_assertion_of_any_shape_only_names_a_flow_never_fails_the_request(claims, settings):
    """flow_of reads an assertion before the view checks it: deep nesting, a
    huge header or a bad signature must not become a 500, nor a caller's flow."""
    settings.ROUTER_PUBLIC_KEYS = [keypair_generate()[1]]
    value = b"Bearer mra_" + base64.urlsafe_b64encode(claims).rstrip(b"=") + b".x"
    assert flow_of({"headers": [(b"authorization", value)], "client": ("10.0.0.1", 5)}) == b"10.0.0.1"


@pytest.mark.parametrize("path,queued", [("/api/v1/tasks", True), ("/api/v1/agents/a1/heartbeat", False)])
def test_the_served_app_queues_requests_but_never_heartbeats(path, queued):
    turns, seen = FairTurns(), []

    def wsgi_app(environ, start_response):
        seen.append(turns._busy)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    app = wsgi_after_body(wsgi_app, None, turns=turns)
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": [],
             "http_version": "1.1", "client": ("127.0.0.1", 1)}
    asyncio.run(app(scope, receive, send))
    assert seen == [queued] and sent[0]["status"] == 200 and not turns._busy
