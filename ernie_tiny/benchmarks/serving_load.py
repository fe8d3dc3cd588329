"""The HTTP server under concurrent load: requests/s and latency of ``POST /predict``.

``python tools/benchmark.py serving --model_dir output/demo/export [--clients 32 --seconds 30] --output FILE.md``
(or ``--url http://127.0.0.1:8000`` for a server already running)

* server: ``deploy/serving/server.py`` started as a subprocess on 127.0.0.1 (a free port) with
  ``--backend``, ``--threads``, ``--batch_size`` and ``--max_wait_ms``; at the end it gets SIGTERM
  and its exit status is reported (0: a graceful shutdown);
* clients: ``--clients`` concurrent clients (asyncio + httpx, one connection each, in this
  process: on a small machine they share its cores with the server), each sending
  ``{"texts": [...]}`` of ``--texts`` review sentences back to back, untimed for
  ``--warmup_seconds``, then timed for ``--seconds``;
* reported: requests, errors (a status other than 200, or no answer), requests/s and texts/s,
  latency p50 / p90 / p99 / max, and the server's own counters from ``/health`` (predictor
  calls, requests per call). Exit status 1 if any request failed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from ernie_tiny.runtime import available_cores

SERVER = Path(__file__).resolve().parents[2] / "deploy" / "serving" / "server.py"
SENTENCES = ["质量很好，物流也快，下次还来", "太差了", "书的内容一般，但是印刷不错。", "性价比很高，推荐购买",
             "客服态度很差，等了三天才发货，包装也破了，不会再买了", "好", "还行吧，和描述的差不多",
             "这本书写得非常好，故事情节引人入胜，人物刻画细腻，值得一读再读"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", help="inference directory: start deploy/serving/server.py over it")
    parser.add_argument("--url", help="or load a server already running at this base URL")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="timed load")
    parser.add_argument("--warmup_seconds", type=float, default=2.0, help="untimed load first")
    parser.add_argument("--texts", type=int, default=1, help="texts per request")
    parser.add_argument("--backend", default="auto", help="the started server's --backend")
    parser.add_argument("--threads", type=int, default=0, help="the started server's --threads (0 = all cores)")
    parser.add_argument("--batch_size", type=int, default=32, help="the started server's --batch_size")
    parser.add_argument("--max_wait_ms", type=float, default=5.0, help="the started server's --max_wait_ms")
    parser.add_argument("--server_warmup", action="store_true", help="start the server with --warmup (every shape "
                                                                     "called once before it serves, within its "
                                                                     "default time budget; the server's stderr says "
                                                                     "how many)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take before it counts "
                                                                     "as an error")
    parser.add_argument("--output", metavar="FILE.md", help="also write the Markdown report here")
    parser.add_argument("--json", metavar="FILE.json", help="also write the measurements here")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    command = [sys.executable, str(SERVER), "--model_dir", args.model_dir, "--host", "127.0.0.1", "--port", str(port),
               "--backend", args.backend, "--threads", str(args.threads), "--batch_size", str(args.batch_size),
               "--max_wait_ms", str(args.max_wait_ms), *(["--warmup"] if args.server_warmup else [])]
    # stdout (uvicorn's access log) is dropped; its start-up and error messages go to our stderr
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def wait_until_up(url: str, process: Optional[subprocess.Popen], seconds: float = 120.0) -> None:
    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering /health "
                               f"(its messages are above)")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"no answer from {url}/health in {seconds:.0f} s")


async def load(url: str, clients: int, texts: int, warmup: float, seconds: float, timeout: float) -> dict:
    """Latencies (s) of the requests that started in the timed window, and the errors among them."""
    import httpx

    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + seconds
    latencies: List[float] = []
    errors: List[str] = []

    async def client(index: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
            sent = index
            while loop.time() < end:
                body = {"texts": [SENTENCES[(sent + k) % len(SENTENCES)] for k in range(texts)]}
                sent += 1
                began = loop.time()
                try:
                    reply = await http.post("/predict", json=body)
                    problem = None if reply.status_code == 200 else f"status {reply.status_code}: {reply.text[:200]}"
                except httpx.HTTPError as err:
                    problem = f"{type(err).__name__}: {err}"
                if began >= start:
                    latencies.append(loop.time() - began)
                    if problem:
                        errors.append(problem)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"latencies": latencies, "errors": errors, "wall": loop.time() - start}


def summarize(measured: dict, args, health_before: dict, health_after: dict) -> dict:
    latencies_ms = np.array(measured["latencies"]) * 1000.0
    requests = len(latencies_ms)
    before, after = health_before["stats"], health_after["stats"]
    batches = after["batches"] - before["batches"]
    served = after["requests"] - before["requests"]
    quantile = lambda q: float(np.percentile(latencies_ms, q)) if requests else float("nan")  # noqa: E731
    return {"requests": requests, "errors": len(measured["errors"]), "error_examples": measured["errors"][:5],
            "seconds": measured["wall"], "requests_per_s": requests / measured["wall"],
            "texts_per_s": requests * args.texts / measured["wall"],
            "p50_ms": quantile(50), "p90_ms": quantile(90), "p99_ms": quantile(99),
            "max_ms": float(latencies_ms.max()) if requests else float("nan"),
            "predictor_calls": batches, "requests_per_call": served / batches if batches else float("nan"),
            "backend": health_after["backend"], "task": health_after["task"],
            "server_batch_size": health_after["batch_size"], "server_max_wait_ms": health_after["max_wait_ms"]}


def command_line(args) -> str:
    """The command that repeats this run (its report's first line)."""
    target = f"--model_dir {args.model_dir} --backend {args.backend} --threads {args.threads} --batch_size " \
             f"{args.batch_size} --max_wait_ms {args.max_wait_ms:g}" if args.model_dir else f"--url {args.url}"
    target += " --server_warmup" if args.server_warmup else ""
    output = f" --output {args.output}" if args.output else ""
    return (f"python tools/benchmark.py serving {target} --clients {args.clients} --texts {args.texts} "
            f"--warmup_seconds {args.warmup_seconds:g} --seconds {args.seconds:g}{output}")


def format_report(meta: dict, result: dict) -> str:
    lines = ["# Serving under load: POST /predict", "",
             f"`{meta['command']}`", "",
             f"Machine: {meta['machine']}, Python {meta['python']}, 1-min load average at start "
             f"{meta['load_average']:.2f}. Server: {meta['server']}; task {result['task']}, backend "
             f"{result['backend']}, batch size {result['server_batch_size']}, max wait "
             f"{result['server_max_wait_ms']} ms. Clients: {meta['clients']} concurrent (asyncio + httpx, "
             f"in one process on the same machine), {meta['texts']} text(s) per request, "
             f"{meta['warmup_seconds']:.0f} s warm-up then {result['seconds']:.1f} s timed.", "",
             "| requests | errors | requests/s | texts/s | p50 | p90 | p99 | max |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
             f"| {result['requests']:,} | {result['errors']} | {result['requests_per_s']:.1f} | "
             f"{result['texts_per_s']:.1f} | {result['p50_ms']:.1f} ms | {result['p90_ms']:.1f} ms | "
             f"{result['p99_ms']:.1f} ms | {result['max_ms']:.1f} ms |", "",
             f"The server made {result['predictor_calls']:,} predictor calls, "
             f"{result['requests_per_call']:.1f} requests per call (micro-batching)."]
    if meta.get("exit_status") is not None:
        lines.append(f"After SIGTERM the server exited with status {meta['exit_status']}.")
    for example in result["error_examples"]:
        lines.append(f"- error: {example}")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    import httpx

    from ernie_tiny.files import write_text_atomically

    if bool(args.model_dir) == bool(args.url):
        print("give --model_dir (start a server) or --url (a running one)", file=sys.stderr)
        return 2
    if args.server_warmup and args.url:
        print("--server_warmup starts the server with --warmup: it needs --model_dir, not --url", file=sys.stderr)
        return 2
    if args.clients < 1 or args.texts < 1 or args.seconds <= 0:
        print("--clients and --texts must be at least 1, --seconds above 0", file=sys.stderr)
        return 2
    process = None
    url = args.url.rstrip("/") if args.url else None
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.model_dir:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_server(args, port)
    exit_status = None
    try:
        wait_until_up(url, process)
        health_before = httpx.get(f"{url}/health").json()
        measured = asyncio.run(load(url, args.clients, args.texts, args.warmup_seconds, args.seconds, args.timeout))
        health_after = httpx.get(f"{url}/health").json()
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                exit_status = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                exit_status = process.wait()
    result = summarize(measured, args, health_before, health_after)
    meta = {"command": command_line(args),
            "machine": f"{platform.machine()}, {available_cores()} cores available ({os.cpu_count()} on the machine)",
            "python": platform.python_version(), "load_average": load_average,
            "server": f"deploy/serving/server.py over {args.model_dir} (started here)" if args.model_dir else url,
            "clients": args.clients, "texts": args.texts, "warmup_seconds": args.warmup_seconds,
            "exit_status": exit_status}
    report = format_report(meta, result)
    print(report)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(Path(args.output), report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(Path(args.json), json.dumps({"meta": meta, "result": result}, indent=1) + "\n")
    return 1 if result["errors"] or (exit_status not in (None, 0)) else 0
