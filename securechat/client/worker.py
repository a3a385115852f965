"""A thread that runs jobs one at a time, in the order they were handed in.

The client's I/O thread must stay free to read the socket and answer pings:
a front end that stops reading our output (a ``--json`` consumer that pauses,
a full pipe) or a slow disk (``pwrite`` and ``fsync`` of a download) must
never stall it. So the I/O thread hands such work to a :class:`SerialWorker`
and goes back to its socket.

The queue is bounded. Reaching the bound means the consumer has been stuck
for a long time (tens of thousands of events unread); only then does
``submit`` wait, so the client stops reading from the server and the server,
as with any client that stops reading, drops it once its own queue for us is
full.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

__all__ = ["SerialWorker"]

log = logging.getLogger(__name__)


class SerialWorker:
    """Runs submitted jobs in order on one daemon thread, started when first needed."""

    def __init__(self, name: str, *, limit: int) -> None:
        self._name = name
        self._limit = limit
        self._cond = threading.Condition()
        self._jobs: deque[Callable[[], None]] = deque()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job``; waits only while ``limit`` jobs are already queued."""
        with self._cond:
            if threading.current_thread() is not self._thread:
                self._cond.wait_for(lambda: len(self._jobs) < self._limit)
            self._jobs.append(job)
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every job submitted so far has run; False on timeout, or at
        once when called from a job (which would wait for itself)."""
        with self._cond:
            if threading.current_thread() is self._thread:
                return False
            return self._cond.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def stop(self) -> None:
        """Let the thread end once the queue is empty (a later submit starts a new one)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._jobs or self._stopping)
                if not self._jobs:
                    self._thread = None
                    return
                job = self._jobs.popleft()
                self._busy = True
                self._cond.notify_all()  # room in the queue
            try:
                job()
            except Exception:
                # A bug in one job must not silence every later event.
                log.exception("%s: job failed", self._name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
