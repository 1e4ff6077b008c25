"""File writes on background threads, so that encoding overlaps reading.

PIL's PNG encoder and zlib release the GIL, so a thread saving tiles runs beside the thread
reading the next ones (``wsi tile``; ``benchmarks/wsi_tile_batch.py``). Hand-written because
:class:`concurrent.futures.ThreadPoolExecutor` queues without bound: a slide read faster than
its tiles are written would hold every decoded tile in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType


class BackgroundWrites:
    """Runs write calls on ``threads`` threads, at most ``pending`` waiting at a time.

    Use as a context manager: leaving it normally waits for every write and raises the first
    write's error (in submission order); leaving it on an error drops the writes not started
    and waits for the running ones, so nothing writes into a folder about to be removed.

    Args:
        threads: writer threads, at least 1.
        pending: writes queued or running before :meth:`submit` waits for the oldest, at
            least ``threads``.

    Raises:
        ValueError: ``threads`` below 1 or ``pending`` below ``threads``.
    """

    def __init__(self, threads: int = 1, pending: int = 8) -> None:
        if threads < 1 or pending < threads:
            raise ValueError(f"need threads >= 1 and pending >= threads, got {threads}, {pending}")
        self.pending = pending
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="oncoscope-write")
        self._futures: deque[Future[None]] = deque()

    def submit(self, write: Callable[[], None]) -> None:
        """Queue ``write``; first wait for the oldest write when ``pending`` are in flight.

        Raises:
            Exception: the error of an earlier write, as soon as it is waited for.
        """
        while len(self._futures) >= self.pending:
            self._futures.popleft().result()
        self._futures.append(self._pool.submit(write))

    def __enter__(self) -> BackgroundWrites:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                while self._futures:
                    self._futures.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._futures.clear()
