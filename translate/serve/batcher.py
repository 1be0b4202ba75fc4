"""Dynamic batching: requests that arrive close together and share an image shape are translated in
one onnxruntime call.

One consumer task on the event loop owns the waiting images, bucketed by shape. It sends a bucket
to the model when the bucket holds ``max_batch`` images, or when its oldest image has waited
``max_wait`` seconds. Inference runs on one worker thread (onnxruntime already spreads one call over
every core and releases the GIL), so the event loop keeps accepting, decoding and answering while
the model computes, and the next batch fills up during the current one: under load, batches grow
to match the arrival rate without any waiting at all.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger("translate.serve")

RunBatch = Callable[[Sequence[np.ndarray], np.ndarray], Sequence[np.ndarray]]


class Busy(Exception):
    """Too many images are waiting already; the client should retry a little later."""


@dataclass
class Result:
    image: np.ndarray  # uint8 HWC RGB
    batch_size: int  # images in the inference call this one was part of
    queued_s: float  # from submit to the start of its inference call
    infer_s: float  # the inference call


@dataclass
class _Item:
    image: np.ndarray
    seed: int
    future: asyncio.Future
    t0: float
    pixels: int = field(init=False)

    def __post_init__(self) -> None:
        self.pixels = self.image.shape[0] * self.image.shape[1]


class Batcher:
    """``await batcher.submit(rgb, seed)`` -> :class:`Result`. ``run(arrays, seeds)`` translates
    images of one shape (``Translator.run_same_shape``); ``on_batch(size, seconds)`` is told about
    each call (metrics). At most ``max_queued_pixels`` pixels wait at once (beyond: :class:`Busy`;
    an image always gets in when nothing waits)."""

    def __init__(self, run: RunBatch, *, max_batch: int, max_wait_s: float, max_queued_pixels: int,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.run = run
        self.max_batch = max(1, max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_queued_pixels = max_queued_pixels
        self.on_batch = on_batch
        self._pending: dict[tuple[int, int], deque[_Item]] = {}
        self._depth = 0
        self._queued_pixels = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._draining = False
        self._busy = False  # an inference call is running

    @property
    def depth(self) -> int:
        """Images waiting for an inference call."""
        return self._depth

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="translate-infer")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="translate-batcher")

    async def stop(self, timeout: float = 30.0) -> None:
        """Send what still waits without waiting for more, finish it, then stop."""
        self._draining = True
        if self._wake is not None:
            self._wake.set()
        deadline = time.monotonic() + timeout
        while (self._depth or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def reserve(self, pixels: int) -> None:
        """Raise :class:`Busy` unless ``pixels`` more fit in the queue (a request checks all its
        images at once, so it is refused whole or not at all)."""
        if self._queued_pixels and self._queued_pixels + pixels > self.max_queued_pixels:
            raise Busy(f"{self._depth} images are waiting already")

    async def submit(self, image: np.ndarray, seed: int) -> Result:
        """Queue one uint8 HWC RGB image. Cancelling the caller (a client that went away) does not
        disturb the batch the image is in: the result is simply dropped."""
        if self._task is None or self._wake is None:
            raise RuntimeError("the batcher is not started")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        fut.add_done_callback(_consume)
        item = _Item(image, int(seed), fut, time.perf_counter())
        self._pending.setdefault(image.shape[:2], deque()).append(item)
        self._depth += 1
        self._queued_pixels += item.pixels
        self._wake.set()
        return await asyncio.shield(fut)

    # the consumer ---------------------------------------------------------------------------------
    def _next_bucket(self) -> tuple[tuple[int, int] | None, float]:
        """The shape to send now (None: nothing is due) and how long until one is due."""
        full = [s for s, q in self._pending.items() if len(q) >= self.max_batch]
        if full:  # the one whose head has waited longest
            return min(full, key=lambda s: self._pending[s][0].t0), 0.0
        shape = min(self._pending, key=lambda s: self._pending[s][0].t0)
        due = self._pending[shape][0].t0 + self.max_wait_s - time.perf_counter()
        return (shape, 0.0) if due <= 0 or self._draining else (None, due)

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            shape, wait = self._next_bucket()
            if shape is None:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                continue
            queue = self._pending[shape]
            items = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
            if not queue:
                del self._pending[shape]
            self._depth -= len(items)
            self._queued_pixels -= sum(i.pixels for i in items)
            items = [i for i in items if not i.future.done()]  # cancelled before it ran
            if not items:
                continue
            self._busy = True
            try:
                started = time.perf_counter()
                outcomes = await loop.run_in_executor(self._executor, self._infer, items)
                for item, (outcome, size, seconds) in zip(items, outcomes):
                    if item.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        item.future.set_exception(outcome)
                    else:
                        item.future.set_result(Result(outcome, size, started - item.t0, seconds))
            except Exception as exc:  # noqa: BLE001 - never let one batch stop the consumer
                log.exception("batch of %d failed", len(items))
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
            finally:
                self._busy = False

    def _infer(self, items: list[_Item]) -> list[tuple[np.ndarray | BaseException, int, float]]:
        """On the worker thread: one call for the batch; if it fails (e.g. out of memory), each
        image alone, so one bad image fails only its own request."""
        seeds = np.array([i.seed for i in items], dtype=np.int64)
        t = time.perf_counter()
        try:
            outs = self.run([i.image for i in items], seeds)
            seconds = time.perf_counter() - t
            self._report(len(items), seconds)
            return [(o, len(items), seconds) for o in outs]
        except Exception as exc:  # noqa: BLE001
            if len(items) == 1:
                return [(exc, 1, time.perf_counter() - t)]
        return [self._infer([i])[0] for i in items]

    def _report(self, size: int, seconds: float) -> None:
        if self.on_batch is not None:
            try:
                self.on_batch(size, seconds)
            except Exception:  # noqa: BLE001 - metrics must not fail a batch
                log.exception("batch metrics failed")


def _consume(fut: asyncio.Future) -> None:
    """Retrieve the exception of a future whose caller went away (no 'never retrieved' warning)."""
    if not fut.cancelled():
        fut.exception()
