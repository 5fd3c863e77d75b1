"""A TCP proxy that delays what it forwards: a bad network on loopback, for the remote generator
(issue #17). This kernel has no `tc netem`, so the delay is put in the path by hand.

Every chunk read from either side is written to the other `delay_ms` ± `jitter_ms` later
(uniform), never before the chunk before it (TCP keeps order, so a late chunk holds up the
ones behind it), and every `stall_every_s` seconds one chunk waits `stall_ms` more, as a lost
segment's retransmission costs TCP. Its own thread ("delay-proxy") runs an asyncio loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time


class DelayProxy:
    """Listens on 127.0.0.1 (`port`, after `start`) and forwards to `target` (host, port)."""

    def __init__(self, target: tuple[str, int], *, delay_ms: float = 20.0, jitter_ms: float = 10.0,
                 stall_ms: float = 300.0, stall_every_s: float = 5.0, seed: int = 1) -> None:
        self.target = target
        self.delay_s, self.jitter_s = delay_ms / 1000, jitter_ms / 1000
        self.stall_s, self.stall_every_s = stall_ms / 1000, stall_every_s
        self.port = 0
        self.stalls = 0
        self._random = random.Random(seed)
        self._next_stall = time.monotonic() + stall_every_s
        self._held_until = 0.0  # `hold`: nothing is delivered before this monotonic time
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def close(self) -> None:
        """Stop listening, drop every connection, end the thread."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def hold(self, seconds: float) -> None:
        """Deliver nothing either way for `seconds` from now (any thread): a link that stalls on
        demand, as a soak's fault schedule asks, beside the periodic stalls."""
        self._held_until = time.monotonic() + seconds

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the proxy's thread --------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def _due(self, last: float) -> float:
        now = time.monotonic()
        due = now + max(0.0, self.delay_s + self._random.uniform(-self.jitter_s, self.jitter_s))
        if now >= self._next_stall:
            self._next_stall = now + self.stall_every_s
            self.stalls += 1
            due += self.stall_s
        return max(due, last, self._held_until)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pump(client_r, server_w), self._pump(server_r, client_w), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                while (wait := max(due, self._held_until) - time.monotonic()) > 0:  # a hold may come meanwhile
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        last = 0.0
        try:
            while data := await reader.read(65536):
                last = self._due(last)
                queue.put_nowait((last, data))
        finally:
            queue.put_nowait((last, b""))
            await asyncio.gather(sender, return_exceptions=True)
