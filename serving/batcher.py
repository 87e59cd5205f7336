"""Batching tiles from concurrent requests into one model call (asyncio, no BentoML import).

Greedy ("continuous") batching: when the model is idle a request runs at once, alone, so a
single client pays no waiting time; while a batch runs, new requests queue, and the next batch
takes everything queued (up to ``max_batch_size`` tiles). Batch size therefore follows the load:
1 at concurrency 1, growing with concurrency, with no latency knob to tune. One batch runs at a
time, in one worker thread, because the model's own intra-op threads already use every core.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class _Pending(Generic[T]):
    tiles: np.ndarray  # (n, C, H, W)
    future: asyncio.Future[list[T]]


class MicroBatcher(Generic[T]):
    """Collects tile arrays from concurrent callers and runs them in shared batches.

    Args:
        run_batch: maps a ``(B, C, H, W)`` batch to ``B`` results, one per tile, in order.
        max_batch_size: most tiles per call (a single larger submission runs on its own).
        name: used for the worker thread's name.
    """

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], Sequence[T]],
        max_batch_size: int,
        name: str = "model",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"expected max_batch_size >= 1, found {max_batch_size}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self._pending: deque[_Pending[T]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")

    async def submit(self, tiles: np.ndarray) -> list[T]:
        """Queue ``tiles`` ``(n, C, H, W)`` and return their ``n`` results when the batch ran."""
        if tiles.ndim != 4 or tiles.shape[0] == 0:
            raise ValueError(f"expected a (n >= 1, C, H, W) array, found shape {tiles.shape}")
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._work())
        assert self._wakeup is not None
        future: asyncio.Future[list[T]] = loop.create_future()
        self._pending.append(_Pending(tiles, future))
        self._wakeup.set()
        return await future

    def _take_batch(self) -> list[_Pending[T]]:
        """Pop queued submissions up to ``max_batch_size`` tiles (at least one submission)."""
        taken = [self._pending.popleft()]
        total = taken[0].tiles.shape[0]
        while self._pending and total + self._pending[0].tiles.shape[0] <= self.max_batch_size:
            item = self._pending.popleft()
            taken.append(item)
            total += item.tiles.shape[0]
        return [item for item in taken if not item.future.cancelled()]

    async def _work(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._take_batch()
                if not batch:
                    continue
                tiles = np.concatenate([item.tiles for item in batch])  # (B, C, H, W)
                try:
                    results = await loop.run_in_executor(self._executor, self.run_batch, tiles)
                except Exception as error:  # the callers decide how to report it
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(error)
                    continue
                start = 0
                for item in batch:
                    stop = start + item.tiles.shape[0]
                    if not item.future.done():
                        item.future.set_result(list(results[start:stop]))
                    start = stop

    async def close(self) -> None:
        """Stop the worker task and its thread; queued callers get ``CancelledError``."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for item in self._pending:
            item.future.cancel()
        self._pending.clear()
        self._executor.shutdown(wait=False)
