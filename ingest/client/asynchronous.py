"""AsyncClient: ships from one asyncio task of the running loop."""
from __future__ import annotations

import asyncio
import time
from typing import Iterable

from ingest.client.batcher import Batch
from ingest.client.delivery import final_reply, send_until_final
from ingest.client.shipper import STOP, Shipper
from ingest.client.transport import AsyncConnection, AsyncIO, Pool


class AsyncClient(Shipper):
    """Client for asyncio: the same options, counters and policies, with
    `await send/flush/close/post` and `async with`; it ships from one task
    of the running loop (started by the first send). Use it from one loop.
    """

    def _setup(self) -> None:
        self._cond = asyncio.Condition()
        self._abort = asyncio.Event()
        self._pool = Pool(lambda: AsyncConnection(self._address))
        self._task: asyncio.Task | None = None

    async def send(self, table: str, event, *, timeout: float | None = None) -> bool:
        """As Client.send."""
        line = self._line(table, event)
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ingest-client")
        async with self._cond:
            self._check_open()
            if not self._batcher.has_room():
                if self._overflow != "block":
                    return self._refuse()
                try:
                    async with asyncio.timeout(timeout):
                        await self._cond.wait_for(self._room_or_closed)
                except TimeoutError:
                    raise self._queue_full() from None
                self._check_open()
            if self._batcher.add(table, line, time.monotonic()):
                self._cond.notify_all()
        return True

    async def flush(self, timeout: float | None = None) -> bool:
        """As Client.flush."""
        async with self._cond:
            flushed = self._flushed()
            self._cond.notify_all()
            try:
                async with asyncio.timeout(timeout):
                    await self._cond.wait_for(flushed)
            except TimeoutError:
                return False
        return True

    async def close(self, timeout: float | None = None) -> bool:
        """As Client.close."""
        async with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._abort.set()
                async with self._cond:
                    self._cond.notify_all()
                if self._current is not None:
                    self._current.interrupt()
            await self._task
        self._pool.close()
        return not self._abort.is_set()

    async def post(self, table: str, events: Iterable, *, wait: str | None = None) -> dict:
        """As Client.post."""
        request = self._post_request(table, events, wait)
        connection = self._pool.take()
        try:
            response = await send_until_final(request, self._policy, self, AsyncIO(connection))
        finally:
            self._pool.give(connection)
        return final_reply(table, response)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not STOP:
            connection = self._current = self._pool.take()
            try:
                await self._deliver(batch.table, batch.lines, AsyncIO(connection, self._abort))
            finally:
                self._current = None
                self._pool.give(connection)
            async with self._cond:
                self._batcher.settle(batch)
                self._cond.notify_all()
        async with self._cond:
            self._abandon()
            self._cond.notify_all()

    async def _next_batch(self):
        async with self._cond:
            while not isinstance(step := self._next_step(self._abort.is_set()), Batch) and step is not STOP:
                try:
                    async with asyncio.timeout(step):
                        await self._cond.wait()
                except TimeoutError:
                    pass
            return step
