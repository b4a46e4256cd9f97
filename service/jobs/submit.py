"""The API's side of the job queue: its own small thread pool, so that job uploads and a broker that stops
answering never take the threads inference uses (asyncio's default executor).

- Parsing/saving uploads run on `JobQueue.executor` (2 threads), sends to the broker on two more threads.
- At most `MAX_SENDING` sends are in flight; one more fails at once (503) instead of queueing behind a hung
  broker. Each send is bounded by the Redis socket/connect timeouts (celery_app.broker_config) and, in case
  a client library ignores them, by `asyncio.wait_for` here.
- The API runs a reaper (service/jobs/reaper.py) in a thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from ..registry import Registry
from ..settings import Settings
from .reaper import Reaper
from .store import JobStore

MAX_SENDING = 2


class QueueUnavailable(Exception):
    """The broker did not take the job (down, hung, or every send slot waiting on it)."""


class JobQueue:
    def __init__(self, settings: Settings, store: JobStore):
        self.settings, self.store = settings, store
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jobs")
        self._send_pool = ThreadPoolExecutor(max_workers=MAX_SENDING, thread_name_prefix="jobs-send")
        self._sending = 0
        self._lock = threading.Lock()
        self._celery = None
        self.reaper: Reaper | None = None

    def celery(self):
        with self._lock:
            if self._celery is None:
                from .celery_app import make_celery

                self._celery = make_celery(self.settings)
            return self._celery

    def send_now(self, job_id: str) -> None:
        """Blocking send (the reaper's thread and the executor call it)."""
        from .celery_app import send_job

        send_job(self.celery(), self.settings, job_id)

    def broker_job_ids(self) -> set[str] | None:
        """The job ids whose message the broker holds (the reaper's check for lost messages)."""
        from .celery_app import broker_job_ids

        return broker_job_ids(self.celery(), self.settings)

    def _sent(self, _fut) -> None:
        with self._lock:
            self._sending -= 1

    async def run(self, fn, *args):
        """fn(*args) on the jobs' own threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def send(self, job_id: str) -> None:
        with self._lock:
            if self._sending >= MAX_SENDING:
                raise QueueUnavailable("every send is waiting on the job queue")
            self._sending += 1
        fut = self._send_pool.submit(self.send_now, job_id)
        fut.add_done_callback(self._sent)  # when the thread is done (or never started), not when we stop waiting
        try:
            await asyncio.wait_for(asyncio.wrap_future(fut), timeout=3 * self.settings.redis_timeout_s + 1)
        except Exception as e:
            raise QueueUnavailable(type(e).__name__) from e

    def start_reaper(self) -> None:
        s = self.settings
        self.reaper = Reaper(self.store, self.send_now, s.job_stale_after_s, s.job_retention_s, Registry(s.registry),
                             present=self.broker_job_ids, lost_after=s.job_lost_after_s)
        self.reaper.start()

    def close(self) -> None:
        if self.reaper is not None:
            self.reaper.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._send_pool.shutdown(wait=False, cancel_futures=True)
