"""Whose request runs next in a web worker: round robin by caller, not by
arrival.

A worker runs one view at a time, in its event loop (project/asgi.py). When
several requests are ready at once, arrival order lets one caller's burst (a
flood of batch submissions, or the claims and reports of the agents working
through it) make everyone else's request wait behind all of it. Here each
ready request joins its flow's line (a flow is the caller's credential, else
its address) and the worker takes one request from each flow in turn, as
Kubernetes' API priority and fairness queues requests by flow in front of its
API server: a caller's request waits for at most one request of each other
busy caller, however many those have queued.

The agents' heartbeats do not queue (project/asgi.py passes them straight
through): a heartbeat is the smallest request there is and must never wait for
a turn."""
from __future__ import annotations

import asyncio
from collections import deque


class FairTurns:
    """One worker's turns. `async with turns.turn(flow):` runs its body when it
    is the flow's turn; the bodies never overlap (a body must not await)."""

    def __init__(self) -> None:
        self._lines: dict[bytes, deque[asyncio.Future]] = {}  # flows in turn order
        self._busy = False  # a turn is given and its body has not ended
        self._picking = False  # a pick is scheduled

    def turn(self, flow: bytes) -> "_Turn":
        return _Turn(self, flow)

    async def _enter(self, flow: bytes) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._lines.setdefault(flow, deque()).append(waiter)
        self._schedule_pick(loop)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # given the turn, gone before using it
                self._leave()
            raise

    def _leave(self) -> None:
        self._busy = False
        if self._lines:
            self._schedule_pick(asyncio.get_running_loop())

    def _schedule_pick(self, loop) -> None:
        # Picked on a later pass of the loop: every request ready now has
        # joined its line by then, so the choice sees them all.
        if not self._busy and not self._picking:
            self._picking = True
            loop.call_soon(self._pick)

    def _pick(self) -> None:
        self._picking = False
        while self._lines and not self._busy:
            flow = next(iter(self._lines))
            line = self._lines.pop(flow)
            waiter = line.popleft()
            if line:
                self._lines[flow] = line  # the flow goes to the back of the round
            if not waiter.cancelled():
                self._busy = True
                waiter.set_result(None)

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values())


class _Turn:
    def __init__(self, turns: FairTurns, flow: bytes) -> None:
        self.turns, self.flow = turns, flow

    async def __aenter__(self) -> None:
        await self.turns._enter(self.flow)

    async def __aexit__(self, *exc) -> None:
        self.turns._leave()


def flow_of(scope: dict) -> bytes:
    """The caller a request belongs to: its bearer credential (the first 48
    bytes: enough to tell any two apart, never stored), else its address."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value[:48]
    client = scope.get("client")
    return (client[0] if client else "").encode()
