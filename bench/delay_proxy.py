#!/usr/bin/env python
"""A userspace TCP proxy that adds a one-way delay in each direction: a WAN
link for benchmarks on a kernel without `tc netem`.

    .venv/bin/python bench/delay_proxy.py --listen 9000 --target 127.0.0.1:8000 --delay-ms 50

--delay-ms is one way: a request and its answer cross the proxy twice, so a
round trip costs 2 x delay (50 ms here is a 100 ms RTT). In process:

    proxy = DelayProxy(("127.0.0.1", 8000), delay=0.05).start()   # a background thread
    ... proxy.port ...; proxy.delay = 0.001; proxy.stop()

Each chunk read is stamped with its due time (arrival + delay) and a writer
task per direction sleeps until the due time of the chunk at its head: the link
holds a window of data in flight, as a real one does, instead of delaying one
chunk after another (which would serialize throughput). Order is kept (one
FIFO per direction). The TCP handshake is emulated too: the client's connect
completes locally at once, so nothing it sends is let through before the
handshake's round trip would have ended (accept + 2 x delay; right for
protocols where the client speaks first, as HTTP and Redis do). An EOF is
forwarded as a half-close after the data before it; the connection closes once
both directions have ended, or at once on a reset.
"""
from __future__ import annotations

import argparse
import asyncio
import threading

CHUNK = 64 * 1024


class DelayProxy:
    """One listening port relaying to one target. `delay` (seconds, one way) may
    be changed while running: it applies to chunks read from then on."""

    def __init__(self, target: tuple[str, int], delay: float, listen: tuple[str, int] = ("127.0.0.1", 0),
                 max_queued: int = 4096):
        self.target = target
        self.delay = delay
        self.listen = listen
        self.max_queued = max_queued  # chunks in flight per direction before the reader waits
        self.port: int | None = None
        self.connections = 0  # accepted so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.port}"

    # --- in a thread of its own ----------------------------------------------------
    def start(self) -> "DelayProxy":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.serve())
            except BaseException as exc:  # the port was taken, ...: start() raises it
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"delay-proxy-{self.target[1]}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # --- asyncio -------------------------------------------------------------------
    async def serve(self) -> None:
        """Start listening (in the running loop); run_forever or serve_forever after."""
        self._server = await asyncio.start_server(self._accept, self.listen[0], self.listen[1],
                                                  reuse_address=True, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        loop = asyncio.get_running_loop()
        # The handshake a real link would have made the client wait for.
        opened = loop.time() + 2 * self.delay
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()
            self._tasks.discard(task)
            return
        pumps = [asyncio.ensure_future(self._direction(client_r, upstream_w, not_before=opened)),
                 asyncio.ensure_future(self._direction(upstream_r, client_w, not_before=0.0))]
        try:
            # Both directions end with an EOF (half-closes, in either order); a
            # reset on either side ends both at once: no half-dead connection stays.
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            failed = any(not p.cancelled() and p.exception() for p in done)
        except asyncio.CancelledError:  # the proxy stops: end quietly (asyncio logs a cancelled handler)
            failed = True
        try:
            if failed:
                for writer in (client_w, upstream_w):
                    writer.transport.abort()
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_w, upstream_w):
                writer.close()
            self._tasks.discard(task)

    async def _direction(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         not_before: float) -> None:
        """Relay one direction: a reader stamps each chunk with its due time, a
        writer delivers it then; either failing (a reset) ends the direction."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(self.max_queued)

        async def stamp() -> None:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((max(loop.time(), not_before) + self.delay, data))
                if not data:  # EOF, delivered after everything before it
                    return

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof() and not writer.is_closing():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.ensure_future(stamp()), asyncio.ensure_future(deliver())]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for pump in done:
                if pump.exception():
                    raise pump.exception()
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return (host or default_host), int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="PORT or HOST:PORT to listen on")
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay, each direction")
    args = parser.parse_args()
    proxy = DelayProxy(parse_hostport(args.target), args.delay_ms / 1000, listen=parse_hostport(args.listen))

    async def run() -> None:
        await proxy.serve()
        print(f"relaying {proxy.address} -> {args.target} with {args.delay_ms:g} ms each way "
              f"({2 * args.delay_ms:g} ms RTT)", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop  # as the region's web runs; plain asyncio works too
    except ImportError:
        uvloop = None
    try:
        uvloop.run(run()) if uvloop else asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
