"""Where a request's work runs: its images are prepared (decoded, ink found, a line cut into digits, each scaled
to 28x28) in a sandboxed worker process (`sandbox.DecodePool`: memory limit, deadline, killed when the client
hangs up), on one of a few request threads, which then run the model in the server's process
(`ServedPredictor`).  A request that finds no thread free within QUEUE_WAIT_S is 503.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import Request

from digitrec.errors import DigitrecError
from digitrec.imaging.prepare import Prepared
from digitrec.inference.predict import Predictor
from digitrec.serve import metrics
from digitrec.serve.http import ApiError
from digitrec.serve.sandbox import QUEUE_WAIT_S, Cancelled, DecodePool

REQUEST_BUDGET_S = 2.5  # decoding all of a request's images must fit in this
NO_DIGITS = np.zeros((0, 28, 28), np.float32)
NO_DIGITS.flags.writeable = False  # one array for every failed image


class ServedPredictor:
    """The Predictor as the server calls it: at most MODEL_CHUNK images per model call (a
    /v1/read of a hundred "digits" must not hold the activations of all of them, with their test-time shifts,
    at once), with inference time and batch size recorded as metrics."""

    MODEL_CHUNK = 16

    def __init__(self, predictor: Predictor, source: Path) -> None:
        self.inner = predictor
        self.source = source  # the model file people gave (the predictor may run its ONNX export: serve/model.py)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def answering(self, max_error: float | None = None, coverage: float | None = None,
                  sets: bool = False) -> ServedPredictor:
        return ServedPredictor(self.inner.answering(max_error, coverage, sets), self.source)

    def probabilities(self, digits):
        if not len(digits):
            return self.inner.probabilities(digits)
        out = []
        for first in range(0, len(digits), self.MODEL_CHUNK):
            chunk = digits[first:first + self.MODEL_CHUNK]
            start = time.perf_counter()
            out.append(self.inner.probabilities(chunk))  # no autograd: the backends run without it
            metrics.INFERENCE_SECONDS.observe(time.perf_counter() - start)
            metrics.BATCH_SIZE.observe(len(chunk))
        return np.concatenate(out)


class Runner:
    """Requests are prepared and run by two threads per preparing worker: enough to keep every worker busy while
    another thread runs the model, few enough that they rarely wait on each other.  Measured with 16 `hey`
    clients (Intel Xeon, 2 workers): a thread per request (Starlette's pool: up to 40) made 29-30 context
    switches a request and 303-320 requests/s; 4 threads 16-17 and 321-345 requests/s, the p99 halved
    (137 -> 66 ms); 2, 3, 6 and 8 threads did worse.  A request waits for a thread at most QUEUE_WAIT_S (then
    503); the queue holds at most --max-concurrency requests, since a request that ends leaves it."""

    def __init__(self, pool: DecodePool) -> None:
        self.pool = pool
        self.threads = ThreadPoolExecutor(2 * pool.size, thread_name_prefix="digitrec-request")

    def close(self) -> None:
        """First drop queued requests, then stop the preparing workers."""
        self.threads.shutdown(wait=False, cancel_futures=True)
        self.pool.close()

    async def run(self, request: Request, items: list[tuple[str, bytes]], line: bool = False, then=None):
        """Prepare on a request thread, in the sandbox (sandbox.py); stop (and kill the workers) when the client
        hangs up.  Returns [(name, Prepared)], or then([(name, Prepared)]) run in the same thread (preparing,
        then the model: one thread hop a request).  No thread free within QUEUE_WAIT_S: 503."""
        cancel, started = threading.Event(), threading.Event()
        job = asyncio.get_running_loop().run_in_executor(self.threads, self._work, items, line, then, cancel,
                                                         started)
        job.add_done_callback(_retrieved)  # a job that outlives its request: its error is nobody's to log
        watcher = asyncio.ensure_future(_client_gone(request))
        try:
            done, _ = await asyncio.wait({job, watcher}, timeout=QUEUE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
            if not done and not started.is_set():  # every request thread busy all that time
                metrics.REJECTED.inc()
                raise ApiError("unavailable", f"the server is busy: no request thread was free for "
                                              f"{QUEUE_WAIT_S:g} s; try again")
            if not done:
                await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not job.done():
                raise ApiError("client_closed", "the client closed the connection")
            if job.cancelled():  # dropped from the queue: the server is shutting down
                raise ApiError("unavailable", "the server is shutting down")
            return job.result()
        except Cancelled:
            raise ApiError("client_closed", "the client closed the connection") from None
        finally:
            cancel.set()  # a running job stops at its next check (also when this handler is cancelled) ...
            job.cancel()  # ... and a queued one is dropped (a no-op once it is done)
            watcher.cancel()

    def _work(self, items, line: bool, then, cancel: threading.Event, started: threading.Event):
        started.set()
        deadline = time.monotonic() + REQUEST_BUDGET_S  # from when a thread takes the request up
        if len(items) == 1:  # the common case: no threads to start
            ready = [(items[0][0], self._prepare(items[0][1], line, deadline, cancel))]
        else:  # a batch's images go to every worker at once: they share one time budget (REQUEST_BUDGET_S)
            with ThreadPoolExecutor(self.pool.size) as threads:
                ready = list(zip([name for name, _ in items],
                                 threads.map(lambda data: self._prepare(data, line, deadline, cancel),
                                             [data for _, data in items])))
        return ready if then is None else then(ready)

    def _prepare(self, data: bytes, line: bool, deadline: float, cancel: threading.Event) -> Prepared:
        start = time.perf_counter()
        try:
            return self.pool.prepare(data, line, deadline, cancel)
        except DigitrecError as e:
            return Prepared(NO_DIGITS, error=e)
        finally:
            metrics.DECODE_SECONDS.observe(time.perf_counter() - start)


async def _client_gone(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _retrieved(job: asyncio.Future) -> None:
    if not job.cancelled():
        job.exception()
