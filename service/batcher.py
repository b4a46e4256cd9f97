"""A small asyncio dynamic batcher.

Concurrent `submit(x)` calls (x: an array whose first axis is the batch) are merged into one call of
`fn(concatenated)` which runs in a thread (so the event loop keeps accepting); each caller gets its
slice of the output back (a view, no copy). A request may hand over its input still encoded, with a
`prepare` function (e.g. PNG decoding): it then runs in the batch thread too, per request, so a request
whose input fails to prepare gets its own error and the rest of the batch runs. Knobs: `max_batch` rows per call, `max_wait` seconds a
request may wait for others, `max_queue` queued requests before `QueueFull` (-> 503 Retry-After).

Batching is greedy: everything queued while the previous call ran is taken at once (up to `max_batch`
rows). `workers` batches may run at once (a new one forms while one computes). When a batch is short of
`max_batch` and the queue is empty, the loop waits (at most `max_wait`) for more rows only while another
batch is running (`adaptive`, the default): under load that fills batches, and an idle service adds no
latency at all; `adaptive=False` always waits. `enabled=False` runs each request on its own (same queue
bound) for the benchmark comparison.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


class QueueFull(Exception):
    """The batcher's queue is at its bound."""


class BatcherClosed(Exception):
    """The batcher is draining or closed and takes no new work."""


@dataclass
class _Item:
    x: object  # an array of n rows, or an input `prepare` turns into one
    fut: asyncio.Future
    n: int
    prepare: Callable[[object], np.ndarray] | None = None
    t0: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_batch: int = 256, max_wait: float = 0.002,
                 max_queue: int = 512, enabled: bool = True, executor: Executor | None = None,
                 workers: int = 1, adaptive: bool = True,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_wait: Callable[[float], None] | None = None,
                 on_depth: Callable[[int], None] | None = None):
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait)
        self.max_queue = int(max_queue)
        self.enabled = enabled
        self.workers = max(1, int(workers))
        self.adaptive = adaptive
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=self.workers if enabled else 4,
                                                       thread_name_prefix="batcher")
        self.on_batch, self.on_wait, self.on_depth = on_batch, on_wait, on_depth
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()  # batches running
        self._running = 0
        self._slot_free: asyncio.Event | None = None
        self._inflight = 0  # requests accepted and not yet answered
        self._idle: asyncio.Event | None = None
        self._closed = False
        self.calls = 0  # ONNX calls made (tests look at it)

    # ------------------------------------------------------------------ public
    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def inflight(self) -> int:
        return self._inflight

    async def submit(self, x, n: int | None = None, prepare: Callable[[object], np.ndarray] | None = None):
        """fn's output for the rows of x. With `prepare`, x is any input of `n` rows that prepare(x) turns
        into the array, in the batch thread (its exceptions reach this caller only)."""
        if self._closed:
            raise BatcherClosed("batcher is shutting down")
        if self._inflight >= self.max_queue:
            raise QueueFull(f"queue full ({self.max_queue} requests)")
        self._ensure_started()
        self._inflight += 1
        self._idle.clear()
        try:
            if not self.enabled:
                if self.on_wait:
                    self.on_wait(0.0)
                call = (lambda: self._call(prepare(x))) if prepare is not None else (lambda: self._call(x))
                return await asyncio.get_running_loop().run_in_executor(self.executor, call)
            item = _Item(x, asyncio.get_running_loop().create_future(), len(x) if n is None else int(n), prepare)
            self._queue.append(item)
            self._depth_changed()
            self._wakeup.set()
            return await item.fut
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking new work and wait for what was accepted to finish."""
        self._closed = True
        if self._idle is not None and self._inflight:
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def close(self, timeout: float | None = None) -> None:
        await self.drain(timeout)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for item in self._queue:
            if not item.fut.done():
                item.fut.set_exception(BatcherClosed("batcher closed"))
        self._queue.clear()
        if self._own_executor:
            self.executor.shutdown(wait=False)

    # ------------------------------------------------------------------ internals
    def _ensure_started(self) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._slot_free = asyncio.Event()
            self._idle = asyncio.Event()
            self._idle.set()
        if self.enabled and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def _depth_changed(self, held: int = 0) -> None:
        """Tell on_depth how many requests wait: queued, plus `held` taken into a batch that waits for more."""
        if self.on_depth:
            self.on_depth(len(self._queue) + held)

    def _call(self, x: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = self.fn(x)
        self.calls += 1
        if self.on_batch:
            self.on_batch(len(x), time.perf_counter() - t)
        return out

    def _take(self, batch: list[_Item], rows: int) -> int:
        while self._queue and (rows == 0 or rows + self._queue[0].n <= self.max_batch):
            item = self._queue.popleft()
            if item.fut.cancelled():
                continue
            batch.append(item)
            rows += item.n
        return rows

    def _prepare_and_call(self, batch: list[_Item]):
        """In the batch thread: prepare each item's input (errors kept per item), then one fn call."""
        xs, errors = [], {}
        for i, item in enumerate(batch):
            if item.prepare is None:
                xs.append(item.x)
                continue
            try:
                xs.append(item.prepare(item.x))
            except Exception as e:
                errors[i] = e
        if not xs:
            return None, errors
        return self._call(xs[0] if len(xs) == 1 else np.concatenate(xs)), errors

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            while self._running >= self.workers:  # every worker busy: let the queue grow into the next batch
                self._slot_free.clear()
                await self._slot_free.wait()
            batch: list[_Item] = []
            rows = self._take(batch, 0)
            # Wait for more rows only under load (another batch running): an idle service flushes at once.
            if rows < self.max_batch and self.max_wait > 0 and not self._queue and (self._running or not self.adaptive):
                deadline = loop.time() + self.max_wait
                self._depth_changed(len(batch))
                while rows < self.max_batch and not self._queue:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), left)
                    except asyncio.TimeoutError:
                        break
                    rows = self._take(batch, rows)
                    self._depth_changed(len(batch))  # they wait for the window to close: still waiting
            self._depth_changed()
            if not batch:
                continue
            self._running += 1
            task = loop.create_task(self._run_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, batch: list[_Item]) -> None:
        try:
            now = time.perf_counter()
            if self.on_wait:
                for item in batch:
                    self.on_wait(now - item.t0)
            try:
                out, errors = await asyncio.get_running_loop().run_in_executor(self.executor,
                                                                               self._prepare_and_call, batch)
            except Exception as e:  # every caller of this batch gets the error
                for item in batch:
                    if not item.fut.done():
                        item.fut.set_exception(e)
                return
            off = 0
            for i, item in enumerate(batch):
                if i in errors:
                    if not item.fut.done():
                        item.fut.set_exception(errors[i])
                    continue
                n = item.n
                if not item.fut.done():
                    item.fut.set_result(tuple(o[off:off + n] for o in out) if isinstance(out, tuple)
                                        else out[off:off + n])
                off += n
        finally:
            self._running -= 1
            self._slot_free.set()
