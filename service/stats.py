"""Per-network inference statistics of a loaded model version, in the shape of the Open Inference Protocol's
statistics extension (Triton's `GET /v2/models/{m}/stats`, tritonclient's `get_inference_statistics`).

Every request through a network's batcher counts, whichever route sent it (/v1/cluster and OIP `mnist-h`
share the `h` batcher): success/fail (count, total ns from submit to result), queue (submit to batch start),
compute_infer (the batch's ONNX call, and what the batch thread does with it: softmax, OOD score) and per batch
size. compute_input/compute_output are part of compute_infer here (reported as 0 ns). Counts start at zero
when a version is loaded, as Triton's do.
"""

from __future__ import annotations

import threading
import time


def _d(count: int, ns: int) -> dict:
    return {"count": count, "ns": ns}


class NetworkStats:
    __slots__ = ("_lock", "success", "success_ns", "fail", "fail_ns", "queue", "queue_ns", "executions",
                 "inferences", "compute_ns", "last_ms", "batches")

    def __init__(self):
        self._lock = threading.Lock()  # the batch threads (2) and the event loop all write
        self.success = self.success_ns = self.fail = self.fail_ns = self.queue = self.queue_ns = 0
        self.executions = self.inferences = self.compute_ns = self.last_ms = 0
        self.batches: dict[int, list[int]] = {}  # batch size -> [executions, compute ns]

    def on_batch(self, n: int, seconds: float) -> None:
        ns = int(seconds * 1e9)
        with self._lock:
            self.executions += 1
            self.inferences += n
            self.compute_ns += ns
            b = self.batches.get(n)
            if b is None:
                self.batches[n] = [1, ns]
            else:
                b[0] += 1
                b[1] += ns

    def on_wait(self, seconds: float) -> None:
        with self._lock:
            self.queue += 1
            self.queue_ns += int(seconds * 1e9)

    def on_done(self, ok: bool, ns: int) -> None:
        with self._lock:
            if ok:
                self.success += 1
                self.success_ns += ns
            else:
                self.fail += 1
                self.fail_ns += ns
            self.last_ms = time.time_ns() // 1_000_000

    def oip(self, name: str, version: str) -> dict:
        with self._lock:
            zero = _d(0, 0)
            return {
                "name": name, "version": version, "last_inference": self.last_ms,
                "inference_count": self.inferences, "execution_count": self.executions,
                "inference_stats": {
                    "success": _d(self.success, self.success_ns), "fail": _d(self.fail, self.fail_ns),
                    "queue": _d(self.queue, self.queue_ns), "compute_input": _d(self.executions, 0),
                    "compute_infer": _d(self.executions, self.compute_ns), "compute_output": _d(self.executions, 0),
                    "cache_hit": zero, "cache_miss": zero},
                "batch_stats": [{"batch_size": n, "compute_input": _d(c, 0), "compute_infer": _d(c, ns),
                                 "compute_output": _d(c, 0)} for n, (c, ns) in sorted(self.batches.items())],
            }


EMPTY = NetworkStats()  # what a network that never ran reports
