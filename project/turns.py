"""Whose request runs next in a web worker: round robin by caller, not by
arrival.

A worker runs one view at a time, in its event loop (project/asgi.py). When
several requests are ready at once, arrival order lets one caller's burst (a
flood of batch submissions, or the claims and reports of the agents working
through it) make everyone else's request wait behind all of it. Here each
ready request joins its flow's line (a flow is the caller's credential, else
its address) and the worker gives the next turn to the waiting flow that has
used the least of the worker's time since it began waiting (start-time fair
queuing, as Kubernetes' API priority and fairness queues requests by flow in
front of its API server): a flow that just ran a 400 ms batch waits while
others' 5 ms requests run, and a caller arriving with one request starts level
with the least served flow, so it waits for at most about one request of each
other busy caller, however many those have queued.

The agents' heartbeats do not queue (project/asgi.py passes them straight
through): a heartbeat is the smallest request there is and must never wait for
a turn."""
from __future__ import annotations

import asyncio
import time
from collections import deque

from project.accounts.assertions import assertion_subject


class FairTurns:
    """One worker's turns. `async with turns.turn(flow):` runs its body when it
    is the flow's turn; the bodies never overlap (a body must not await)."""

    def __init__(self) -> None:
        self._lines: dict[bytes, deque[asyncio.Future]] = {}  # waiting flows, in arrival order
        self._used: dict[bytes, float] = {}  # seconds of turns each waiting (or running) flow has had
        self._busy = False  # a turn is given and its body has not ended
        self._picking = False  # a pick is scheduled

    def turn(self, flow: bytes) -> "_Turn":
        return _Turn(self, flow)

    async def _enter(self, flow: bytes) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if flow not in self._lines and flow not in self._used:
            # A flow that was idle starts level with the least served one waiting.
            self._used[flow] = min((self._used.get(f, 0.0) for f in self._lines), default=0.0)
        self._lines.setdefault(flow, deque()).append(waiter)
        self._schedule_pick(loop)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # given the turn, gone before using it
                self._leave(flow, 0.0)
            raise  # still in its line: the pick skips it

    def _leave(self, flow: bytes, seconds: float) -> None:
        self._busy = False
        if flow in self._lines:
            self._used[flow] = self._used.get(flow, 0.0) + seconds
        else:
            self._used.pop(flow, None)  # idle again: forgotten (bounded by the flows waiting)
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
            flow = min(self._lines, key=lambda f: self._used.get(f, 0.0))  # ties: the earliest waiting
            line = self._lines[flow]
            waiter = line.popleft()
            if not line:
                del self._lines[flow]  # its usage stays until its turn ends (_leave)
            if waiter.cancelled():
                if flow not in self._lines:
                    self._used.pop(flow, None)  # nobody runs now (not busy): the flow is idle
                continue
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
        self.began = time.monotonic()

    async def __aexit__(self, *exc) -> None:
        self.turns._leave(self.flow, time.monotonic() - self.began)


_ASSERTION = b"Bearer mra_"  # project/accounts/assertions.py: the router's, for a caller it forwards


def flow_of(scope: dict) -> bytes:
    """The caller a request belongs to: its bearer credential (the first 48
    bytes: enough to tell any two keys apart; never stored), the caller a
    router's assertion names when the router signed it (each assertion is new,
    its caller is not; a forged one falls back to the address), else its
    address."""
    client = scope.get("client")
    address = (client[0] if client else "").encode()
    for name, value in scope["headers"]:
        if name == b"authorization":
            if value.startswith(_ASSERTION):
                subject = assertion_subject(value[len(b"Bearer "):].decode("latin1"))
                return b"router:" + subject[:150].encode() if subject is not None else address
            return value[:48]
    return address
