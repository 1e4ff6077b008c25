"""Background writes: every write done before the block ends, bounded, errors not lost."""

from __future__ import annotations

import threading
import time
from functools import partial

import pytest

from oncoscope.io.background_writes import BackgroundWrites


def test_every_write_is_done_when_the_block_ends() -> None:
    done: list[int] = []
    with BackgroundWrites(threads=2, pending=4) as writes:
        for number in range(30):
            writes.submit(partial(done.append, number))
    assert sorted(done) == list(range(30))


def test_writes_in_flight_never_exceed_pending() -> None:
    lock = threading.Lock()
    completed = 0
    in_flight: list[int] = []

    def slow_write() -> None:
        nonlocal completed
        time.sleep(0.005)
        with lock:
            completed += 1

    with BackgroundWrites(threads=1, pending=3) as writes:
        for submitted in range(1, 21):
            writes.submit(slow_write)
            with lock:
                in_flight.append(submitted - completed)
    # an unbounded queue would reach about 20 here: the caller submits far faster than 5 ms
    assert max(in_flight) <= 3
    assert completed == 20


def test_a_write_error_reaches_the_caller() -> None:
    def failing() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"), BackgroundWrites() as writes:
        writes.submit(failing)


def test_an_error_in_the_block_drops_writes_not_started() -> None:
    release = threading.Event()
    first_running = threading.Event()
    started: list[int] = []

    def write(number: int) -> None:
        started.append(number)
        first_running.set()
        release.wait(5)

    with (
        pytest.raises(RuntimeError, match="reader failed"),
        BackgroundWrites(threads=1, pending=4) as writes,
    ):
        for number in range(3):
            writes.submit(partial(write, number))
        assert first_running.wait(5)
        queued = list(writes._futures)[1:]

        def release_once_cancelled() -> None:  # not on a timer: a loaded machine may be slow
            deadline = time.monotonic() + 5
            while not all(f.cancelled() for f in queued) and time.monotonic() < deadline:
                time.sleep(0.001)
            release.set()

        threading.Thread(target=release_once_cancelled).start()
        raise RuntimeError("reader failed")
    assert started == [0]  # the running write finished; the queued two never ran


@pytest.mark.parametrize(("threads", "pending"), [(0, 4), (2, 1)])
def test_bad_sizes_are_refused(threads: int, pending: int) -> None:
    with pytest.raises(ValueError, match="threads >= 1"):
        BackgroundWrites(threads=threads, pending=pending)
