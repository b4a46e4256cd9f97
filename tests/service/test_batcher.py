"""service.batcher.Batcher on its own (no ONNX, no HTTP)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batcher import Batcher, BatcherClosed, QueueFull


def run(coro):
    return asyncio.run(coro)


async def until(pred, timeout: float = 10.0, what: str = "the condition"):
    """Wait on the event loop until pred() holds (polled), or fail after `timeout` s: an event, not a guess."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


def test_concurrent_requests_merge_into_one_call():
    sizes = []

    def fn(x):
        sizes.append(len(x))
        return x * 2

    async def main():
        b = Batcher(fn, max_batch=64, max_wait=0.05, max_queue=100)
        xs = [np.full((i + 1, 3), i, np.float32) for i in range(8)]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        for x, o in zip(xs, outs):
            np.testing.assert_array_equal(o, x * 2)
        await b.close()

    run(main())
    assert sizes == [36]  # 1+2+...+8 rows, one call


def test_max_batch_splits_and_greedy_after_busy_call():
    sizes = []

    def fn(x):
        sizes.append(len(x))
        time.sleep(0.02)
        return x

    async def main():
        b = Batcher(fn, max_batch=4, max_wait=0.0, max_queue=100)
        outs = await asyncio.gather(*(b.submit(np.full((1, 1), i, np.float32)) for i in range(10)))
        assert [float(o[0, 0]) for o in outs] == list(range(10))
        await b.close()

    run(main())
    assert max(sizes) <= 4 and sum(sizes) == 10 and len(sizes) < 10


def test_oversized_request_runs_alone():
    sizes = []

    async def main():
        b = Batcher(lambda x: sizes.append(len(x)) or x, max_batch=4, max_wait=0.0)
        out = await b.submit(np.zeros((10, 2), np.float32))
        assert out.shape == (10, 2)
        await b.close()

    run(main())
    assert sizes == [10]


def test_queue_full_raises():
    gate, entered = threading.Event(), threading.Event()

    def fn(x):
        entered.set()
        gate.wait(5)
        return x

    async def main():
        b = Batcher(fn, max_batch=1, max_wait=0.0, max_queue=2)
        t1 = asyncio.create_task(b.submit(np.zeros((1, 1), np.float32)))
        t2 = asyncio.create_task(b.submit(np.zeros((1, 1), np.float32)))
        await until(lambda: entered.is_set() and b.depth == 1, what="one request running, one queued")
        with pytest.raises(QueueFull):
            await b.submit(np.zeros((1, 1), np.float32))
        gate.set()
        await asyncio.gather(t1, t2)
        await b.close()

    run(main())


def test_errors_reach_every_caller_and_loop_survives():
    calls = {"n": 0}

    def fn(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return x

    async def main():
        b = Batcher(fn, max_batch=8, max_wait=0.02)
        res = await asyncio.gather(b.submit(np.zeros((1, 1))), b.submit(np.zeros((1, 1))), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in res)
        assert (await b.submit(np.ones((1, 1))))[0, 0] == 1
        await b.close()

    run(main())


def test_disabled_runs_each_request_alone():
    sizes = []

    async def main():
        b = Batcher(lambda x: sizes.append(len(x)) or x, enabled=False, max_queue=10)
        await asyncio.gather(*(b.submit(np.zeros((2, 1))) for _ in range(5)))
        await b.close()

    run(main())
    assert sizes == [2] * 5


def test_drain_finishes_inflight_then_refuses():
    entered = threading.Event()

    def fn(x):
        entered.set()
        time.sleep(0.1)
        return x + 1

    async def main():
        b = Batcher(fn, max_batch=8, max_wait=0.0)
        t = asyncio.create_task(b.submit(np.zeros((1, 1))))
        await until(entered.is_set, what="the request to reach the model")
        await b.drain(timeout=5)
        assert t.done() and t.result()[0, 0] == 1
        with pytest.raises(BatcherClosed):
            await b.submit(np.zeros((1, 1)))
        await b.close()

    run(main())


def test_metric_hooks_called():
    seen = {"batch": [], "wait": [], "depth": []}

    async def main():
        b = Batcher(lambda x: x, max_batch=8, max_wait=0.01, on_batch=lambda n, dt: seen["batch"].append(n),
                    on_wait=seen["wait"].append, on_depth=seen["depth"].append)
        await asyncio.gather(*(b.submit(np.zeros((1, 1))) for _ in range(3)))
        await b.close()

    run(main())
    assert seen["batch"] == [3] and len(seen["wait"]) == 3 and max(seen["depth"]) >= 1 and seen["depth"][-1] == 0


@pytest.mark.parametrize("enabled", [True, False])
def test_prepare_runs_in_the_batch_thread_and_its_errors_stay_with_their_request(enabled):
    """Encoded inputs are prepared (decoded) in the batch thread, not on the event loop; a request whose
    input fails to prepare gets its own error, and the rest of its batch is answered."""
    threads, sizes = set(), []

    def prepare(rows):
        threads.add(threading.current_thread().name)
        if rows == "bad":
            raise ValueError("image 0: cannot decode image")
        return np.asarray(rows, np.float32).reshape(-1, 1)

    def fn(x):
        sizes.append(len(x))
        return x * 2

    async def main():
        b = Batcher(fn, max_batch=64, max_wait=0.05, enabled=enabled, adaptive=False)
        res = await asyncio.gather(b.submit([1, 2], 2, prepare), b.submit("bad", 1, prepare),
                                   b.submit(np.full((1, 1), 5, np.float32)), return_exceptions=True)
        await b.close()
        return res

    ok, bad, plain = run(main())
    assert ok.ravel().tolist() == [2, 4] and plain.ravel().tolist() == [10]
    assert isinstance(bad, ValueError) and "cannot decode" in str(bad)
    assert threads and threading.main_thread().name not in threads
    if enabled:
        assert sizes == [3]  # one call for the two good requests


def test_depth_counts_requests_held_for_the_batching_window():
    """Requests taken into a batch that waits for more rows are still waiting: on_depth (the nemgan_queue_depth
    gauge) counts them until the window closes, so tests and dashboards can see them (it said 0 before)."""
    depths: list[int] = []
    sizes: list[int] = []

    async def main():
        b = Batcher(lambda x: sizes.append(len(x)) or x, max_batch=64, max_wait=2.0, adaptive=False,
                    on_depth=depths.append)
        tasks = []
        for k in (1, 2, 3):  # one at a time: each is taken out of the queue into the waiting batch
            tasks.append(asyncio.create_task(b.submit(np.zeros((1, 1)))))
            await until(lambda k=k: b.depth == 0 and bool(depths) and depths[-1] == k, what=f"{k} requests held")
        assert not any(t.done() for t in tasks) and not sizes  # held, not yet run
        await asyncio.gather(*tasks)
        assert sizes == [3] and depths[-1] == 0
        await b.close()

    run(main())
