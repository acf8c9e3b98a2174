"""The run's flow control, apart from any image: a background prefetch with a bounded queue, and the batching policy
(equal keys together, full batches at once, partial ones under memory pressure or at the end) as a pure generator."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def batches(items: Iterable[T], key: Callable[[T], Hashable | None], size: int, limit: int) -> Iterator[list[T]]:
    """Group items of equal key into batches of `size`, each yielded as soon as it is full; an item whose key is None
    goes alone at once. When more than `limit` items wait, the bucket opened first goes as a partial batch (bounding
    memory); when the items end, the buckets left go in the order they were opened."""
    buckets: dict[Hashable, list[T]] = {}
    held = 0  # items waiting in buckets
    for item in items:
        k = key(item)
        if k is None:
            yield [item]
            continue
        bucket = buckets.setdefault(k, [])
        bucket.append(item)
        held += 1
        if len(bucket) == size:
            held -= size
            yield buckets.pop(k)
        elif held > limit:
            oldest = next(iter(buckets))
            held -= len(buckets[oldest])
            yield buckets.pop(oldest)
    while buckets:
        yield buckets.pop(next(iter(buckets)))


def prefetch(items: Iterator[T], depth: int) -> Iterator[T]:
    """Run an iterator in a background thread, at most `depth` items ahead of the consumer; closing stops it."""
    ready: queue.Queue = queue.Queue(depth)
    halt = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not halt.is_set():
                    try:
                        ready.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        pass
                if halt.is_set():
                    break
        except BaseException as err:  # re-raised in the consumer
            ready.put((end, err))
            return
        finally:
            getattr(items, "close", lambda: None)()
        ready.put((end, None))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is end:
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        halt.set()
        while thread.is_alive():
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()
