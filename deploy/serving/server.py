"""HTTP server around the predictor (FastAPI + uvicorn), with micro-batching of concurrent requests.

    python deploy/serving/server.py --model_dir output/demo/export --port 8000
    curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{"texts": ["质量很好，物流也快"]}'
    # {"results": [{"label": "positive", "score": ...}]}

Endpoints:

* ``POST /predict`` ``{"texts": [...], "text_pairs": [...]}`` (``text_pairs`` only for pair
  tasks) -> ``{"results": [...]}``, one result per text, as ``Predictor.predict`` gives them.
* ``GET /health`` -> status, task, labels, backend, limits, and counters (requests, texts,
  batches, the most requests served by one batch).
* The KServe v2 / Triton HTTP inference protocol (``ernie_tiny/deploy/kserve_v2.py``), for
  tritonclient and other v2 clients: ``GET /v2/health/live``, ``/v2/health/ready``,
  ``GET /v2/models/<name>`` (inputs ``text`` [+ ``text_pair``] as BYTES; outputs ``label`` and
  ``score``), ``POST /v2/models/<name>/infer``; ``<name>`` is ``--model_name`` (default: the task).
  Its errors are the protocol's ``{"error": "..."}``.

Concurrent requests are gathered into one predictor call: the batcher takes the first waiting
request, then keeps taking requests for up to ``--max_wait_ms`` or until ``--batch_size``
texts are gathered, runs them together on one worker thread (the predictor is not
thread-safe), and answers each request with its own results. While a batch runs, new requests
queue and form the next batch, so batches grow with the load.

Limits, checked before any work, with clear 4xx errors (``{"detail": "..."}``):
415 a ``Content-Type`` other than ``application/json``; 413 body larger than ``--max_body_bytes``,
more than ``--max_texts`` texts, or a text longer than ``--max_chars`` characters; 400 a
compressed body (``Content-Encoding``), a body that is not UTF-8 or not JSON, or a text that is not
valid Unicode (a lone surrogate); 422 a body of the wrong shape (no ``texts``, not a list of
strings, an empty list, text pairs missing or of the wrong count). The OpenAPI schema (``GET /openapi.json``, ``/docs``) describes ``/predict``'s request body
with these limits and each of these answers (``ernie_tiny/deploy/predict_api.py``).

On SIGTERM uvicorn stops taking connections, lets the requests in flight finish, then
the batcher stops and the process exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fastapi import FastAPI, HTTPException, Request  # noqa: E402

from ernie_tiny import __version__  # noqa: E402
from ernie_tiny.deploy.inputs import DeployInputError, port, positive_int, seconds  # noqa: E402
from ernie_tiny.deploy.json_body import parse_json, read_body  # noqa: E402
from ernie_tiny.deploy.kserve_v2 import add_v2_routes, text_problem  # noqa: E402
from ernie_tiny.deploy.predict_api import JSON, PredictRequest, predict_openapi  # noqa: E402
from ernie_tiny.deploy.predictor import add_backend_arguments, predictor_from_args  # noqa: E402 (no Paddle import)
from ernie_tiny.runtime import configure_threads  # noqa: E402

WARMUP_SECONDS = 120.0  # --warmup's default budget: no shape is started once it has passed


@dataclass
class Limits:
    max_texts: int = 64
    max_chars: int = 1000
    max_body_bytes: int = 1 << 20


@dataclass
class Stats:
    requests: int = 0
    texts: int = 0
    batches: int = 0
    max_batch_requests: int = 0
    started: float = field(default_factory=time.time)


class MicroBatcher:
    """Gathers the texts of concurrent requests into one ``predict(texts, pairs)`` call."""

    def __init__(self, predict, batch_size: int, max_wait_ms: float):
        self.predict = predict
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predictor")
        self.stats = Stats()
        self._task: Optional[asyncio.Task] = None

    async def submit(self, texts: List[str], pairs: Optional[List[str]]) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, pairs, future))
        return await future

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    @property
    def running(self) -> bool:
        """Whether batches are being formed (between the app's start-up and shut-down)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True)

    async def _gather(self) -> list:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        count = len(batch[0][0])
        deadline = loop.time() + self.max_wait
        while count < self.batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(self.queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            batch.append(item)
            count += len(item[0])
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            texts = [t for texts, _, _ in batch for t in texts]
            with_pairs = any(pairs is not None for _, pairs, _ in batch)
            pairs = [p for texts, pairs, _ in batch for p in (pairs or [""] * len(texts))] if with_pairs else None
            try:
                results = await loop.run_in_executor(self.executor, self.predict, texts, pairs)
            except Exception as err:  # one bad batch must not stop the server
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.stats.batches += 1
            self.stats.max_batch_requests = max(self.stats.max_batch_requests, len(batch))
            start = 0
            for texts_i, _, future in batch:
                if not future.done():  # the client may have gone away
                    future.set_result(results[start:start + len(texts_i)])
                start += len(texts_i)


def parse_request(body: bytes, limits: Limits, pair_task: bool) -> PredictRequest:
    """The request in ``body`` (read by ``json_body.read_body``), or an HTTPException with the 4xx
    status and message described above."""
    request = parse_json(body, PredictRequest, HTTPException, "request body", 422, 'expected {"texts": [string, ...]}')
    if len(request.texts) > limits.max_texts:
        raise HTTPException(413, f"{len(request.texts)} texts; at most {limits.max_texts} per request")
    if pair_task and request.text_pairs is None:
        raise HTTPException(422, "this model takes text pairs: give text_pairs, one per text")
    if not pair_task and request.text_pairs is not None:
        raise HTTPException(422, "this model takes single texts: remove text_pairs")
    if request.text_pairs is not None and len(request.text_pairs) != len(request.texts):
        raise HTTPException(422, f"{len(request.texts)} texts but {len(request.text_pairs)} text_pairs")
    for name, values in (("texts", request.texts), ("text_pairs", request.text_pairs or [])):
        problem = text_problem(name, values, limits.max_chars)
        if problem:
            raise HTTPException(*problem)
    return request


def create_app(predictor, limits: Optional[Limits] = None, batch_size: int = 32, max_wait_ms: float = 5.0,
               model_name: str = "") -> FastAPI:
    """The FastAPI app over a ``Predictor`` (or anything with ``predict(texts, pairs)`` and its attributes);
    ``model_name`` names the model in the v2 protocol's URLs (default: the task)."""
    limits = limits or Limits()
    batcher = MicroBatcher(predictor.predict, batch_size, max_wait_ms)

    async def serve(texts: List[str], pairs: Optional[List[str]]) -> list:
        """One request's results through the micro-batcher, counted."""
        batcher.stats.requests += 1
        batcher.stats.texts += len(texts)
        return await batcher.submit(texts, pairs)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="ernie-tiny", description=f"{predictor.info['task']}: labels {predictor.labels}",
                  lifespan=lifespan)
    app.state.batcher = batcher
    pair_task = predictor.input_type == "pair"

    @app.get("/health")
    async def health() -> dict:
        stats = batcher.stats
        return {"status": "ok", "task": predictor.info["task"], "head": predictor.head, "input": predictor.input_type,
                "labels": predictor.labels, "backend": predictor.description,
                "limits": vars(limits), "batch_size": batch_size, "max_wait_ms": max_wait_ms,
                "stats": {**vars(stats), "uptime_s": round(time.time() - stats.started, 1)}}

    @app.post("/predict", response_model=None,
              **predict_openapi(limits.max_texts, limits.max_chars, pair_task, predictor.head))
    async def predict(request: Request) -> dict:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != JSON:
            raise HTTPException(415, f"Content-Type {media_type or '(none)'!r}: send the body as {JSON}")
        parsed = parse_request(await read_body(request, limits.max_body_bytes, HTTPException), limits, pair_task)
        return {"results": await serve(parsed.texts, parsed.text_pairs)}

    add_v2_routes(app, predictor, serve, limits, model_name or predictor.info["task"], lambda: batcher.running,
                  __version__)
    return app


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="inference directory written by tools/export.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=8000)
    parser.add_argument("--model_name", default="", help="the model's name in the v2 protocol (default: the task)")
    add_backend_arguments(parser)
    parser.add_argument("--batch_size", type=positive_int, default=32, help="texts per predictor call")
    parser.add_argument("--max_wait_ms", type=float, default=5.0, help="how long a batch waits for more requests")
    parser.add_argument("--max_texts", type=positive_int, default=64, help="texts per request")
    parser.add_argument("--max_chars", type=positive_int, default=1000, help="characters per text")
    parser.add_argument("--max_body_bytes", type=positive_int, default=1 << 20)
    parser.add_argument("--warmup", nargs="?", type=seconds, const=WARMUP_SECONDS, metavar="SECONDS",
                        help="before serving, call the model once with every batch size x padded length it can be "
                             "sent, cheapest first (--batch_size x max length / 16 shapes; a shape's first call is "
                             "slower, several times on OpenVINO's dynamic int8 model), stopping once SECONDS have "
                             f"passed (default {WARMUP_SECONDS:g}; inf: no limit; the cheapest shape is always called)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_threads(args.threads)
    import uvicorn

    try:
        predictor = predictor_from_args(args, background_compile=True)  # no request waits for a shape's compile
    except DeployInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.warmup is not None:
        started, total = time.perf_counter(), len(predictor.sendable_shapes())
        called = predictor.warm_up(args.warmup)
        rest = (f" (--warmup {args.warmup:g} s reached: the other {total - called} get their first call from requests)"
                if called < total else "")
        print(f"warmed up: {called} of {total} batch x length shapes in {time.perf_counter() - started:.1f} s{rest}",
              file=sys.stderr, flush=True)
    app = create_app(predictor, Limits(args.max_texts, args.max_chars, args.max_body_bytes), args.batch_size,
                     args.max_wait_ms, args.model_name)
    print(f"serving {predictor.info['task']} ({predictor.description}) on http://{args.host}:{args.port}",
          flush=True)
    # uvicorn shuts down gracefully on SIGTERM (in-flight requests finish), then raises the signal
    # again for the handler that was there before it: a no-op one makes that finished shutdown exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
