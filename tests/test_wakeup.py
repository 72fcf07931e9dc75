"""The poll loops' self-pipe (pure: a pipe and threads, no Flux, no ZMQ)."""

import os
import queue
import select
import threading

from parsl_flux.wire.wakeup import Waker


def _pending_bytes(waker: Waker) -> bytes:
    ready, _, _ = select.select([waker.fd], [], [], 0)
    return os.read(waker.fd, 100) if ready else b""


def test_a_wake_up_already_pending_writes_nothing_more():
    waker = Waker()
    try:
        for _ in range(5):
            waker.wake()
        assert _pending_bytes(waker) == b"x"
        waker.drain()
        waker.wake()
        assert _pending_bytes(waker) == b"x", "a wake after drain must write again"
    finally:
        waker.close()


def test_no_work_is_stranded_by_a_skipped_wake_up():
    """Four producers queue 20 000 items, each followed by a wake; a loop that
    polls the pipe, drains it, then empties the queue must see every item
    without ever timing out on its poll (a lost wake-up would strand one)."""
    waker = Waker()
    work: "queue.SimpleQueue[int]" = queue.SimpleQueue()
    total, producers = 20000, 4
    seen = []
    stalled = []

    def produce(start: int) -> None:
        for i in range(start, total, producers):
            work.put(i)
            waker.wake()

    def loop() -> None:
        while len(seen) < total:
            ready, _, _ = select.select([waker.fd], [], [], 5.0)
            if not ready:
                stalled.append(len(seen))
                return
            waker.drain()
            while True:
                try:
                    seen.append(work.get_nowait())
                except queue.Empty:
                    break

    consumer = threading.Thread(target=loop)
    consumer.start()
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    consumer.join(timeout=30)
    waker.close()
    assert not stalled, f"the loop waited 5 s with work queued: {total - stalled[0]} items stranded"
    assert sorted(seen) == list(range(total))
