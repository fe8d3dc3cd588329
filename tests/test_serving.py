"""The HTTP server (deploy/serving/server.py) on loopback, over a tiny exported model: real
requests through uvicorn, good and bad, concurrent ones batched together."""
import argparse
import contextlib
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from test_export import TEXTS, export, make_tiny_model

ROOT = Path(__file__).resolve().parent.parent
MAX_TEXTS, MAX_CHARS, MAX_BODY = 4, 50, 2000


def load_server_module():
    spec = importlib.util.spec_from_file_location("ernie_tiny_server", ROOT / "deploy/serving/server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_background(app):
    """The base URL of ``app`` served by uvicorn on 127.0.0.1 in a background thread, until exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def exported_predictor(base: Path, task: str, *overrides: str):
    """A Predictor (Paddle Inference, 1 thread) over a tiny random model of ``task``, exported under
    ``base`` (with the export config's ``overrides``)."""
    from ernie_tiny.deploy.predictor import Predictor

    model = make_tiny_model(base / "model", task)
    out = export(model, base / "export", "Export.onnx=false", "Export.int8=off", "Export.check_examples=8", *overrides)
    return Predictor(out, backend="paddle", threads=1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, predictor, app) of a server running in a background thread."""
    predictor = exported_predictor(tmp_path_factory.mktemp("serve"), "review_sentiment")
    server_module = load_server_module()
    app = server_module.create_app(predictor, server_module.Limits(MAX_TEXTS, MAX_CHARS, MAX_BODY), batch_size=16,
                                   max_wait_ms=300)
    with serve_in_background(app) as url:
        yield url, predictor, app


def test_health(served):
    url, predictor, _ = served
    reply = httpx.get(f"{url}/health")
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "ok" and body["labels"] == ["positive", "negative"] and body["task"] == "review_sentiment"
    assert body["limits"] == {"max_texts": MAX_TEXTS, "max_chars": MAX_CHARS, "max_body_bytes": MAX_BODY}


def test_predict_returns_the_predictor_results(served):
    url, predictor, _ = served
    reply = httpx.post(f"{url}/predict", json={"texts": TEXTS[:3]})
    assert reply.status_code == 200
    assert reply.json()["results"] == predictor.predict(TEXTS[:3])


def test_concurrent_requests_are_batched_and_answered_separately(served):
    url, predictor, app = served
    expected = {text: result for text, result in zip(TEXTS, predictor.predict(TEXTS))}
    before = dict(vars(app.state.batcher.stats))

    def ask(i):
        texts = [TEXTS[i % len(TEXTS)], TEXTS[(i + 1) % len(TEXTS)]][: 1 + i % 2]
        return texts, httpx.post(f"{url}/predict", json={"texts": texts}, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    for texts, reply in answers:
        assert reply.status_code == 200
        assert reply.json()["results"] == [expected[t] for t in texts]
    stats = vars(app.state.batcher.stats)
    assert stats["requests"] - before["requests"] == 8
    assert stats["batches"] - before["batches"] < 8 and stats["max_batch_requests"] >= 2


@pytest.mark.parametrize("body, status, message", [
    (json.dumps({"texts": ["好"] * (MAX_TEXTS + 1)}), 413, f"5 texts; at most {MAX_TEXTS} per request"),
    (json.dumps({"texts": ["好", "长" * (MAX_CHARS + 1)]}), 413, f"texts[1] has 51 characters; at most {MAX_CHARS}"),
    (json.dumps({"texts": ["x" * 1000, "y" * 1000, "z"]}), 413, f"at most {MAX_BODY}"),
    (json.dumps({"texts": []}), 422, "texts: List should have at least 1 item"),
    (json.dumps({"text": ["好"]}), 422, "texts: Field required"),
    (json.dumps({"texts": "好"}), 422, "texts: Input should be a valid list"),
    (json.dumps({"texts": ["好", 3]}), 422, "texts.1: Input should be a valid string"),
    (json.dumps({"texts": ["好"], "text_pairs": ["坏"]}), 422, "this model takes single texts"),
    ('{"texts": ["好"', 400, "not valid JSON"),
    (b'{"texts": ["\xff\xfe"]}', 400, "not valid UTF-8"),
    ('{"texts": ["\\ud800"]}', 400, "texts[0] is not valid Unicode"),
])
def test_bad_requests_get_clear_4xx_errors(served, body, status, message):
    url, _, _ = served
    reply = httpx.post(f"{url}/predict", content=body.encode() if isinstance(body, str) else body,
                       headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    assert message in reply.json()["detail"]


def test_both_protocols_check_a_request_body_the_same_way(served):
    """/predict and the v2 infer route share one body reader: a compressed body is refused (400),
    a declared or actual size over the limit is a 413, in each protocol's error body."""
    import gzip

    url, predictor, _ = served
    v2 = f"{url}/v2/models/{predictor.info['task']}/infer"
    for path, key, body in ((f"{url}/predict", "detail", {"texts": ["好"]}),
                            (v2, "error", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                                        "data": ["好"]}]})):
        packed = gzip.compress(json.dumps(body).encode())
        reply = httpx.post(path, content=packed, headers={"Content-Type": "application/json",
                                                          "Content-Encoding": "gzip"})
        assert reply.status_code == 400, (path, reply.text)
        assert reply.json()[key] == "Content-Encoding 'gzip' is not supported: send the request uncompressed"
        reply = httpx.post(path, content=b"{" + b" " * MAX_BODY + b"}", headers={"Content-Type": "application/json"})
        assert reply.status_code == 413 and f"at most {MAX_BODY}" in reply.json()[key], (path, reply.text)
        reply = httpx.post(path, content=b"[1]", headers={"Content-Type": "application/json"})
        assert reply.status_code in (400, 422) and "body: Input should be" in reply.json()[key], (path, reply.text)


def test_the_server_still_serves_after_bad_requests(served):
    url, predictor, _ = served
    assert httpx.get(f"{url}/predict").status_code == 405
    reply = httpx.post(f"{url}/predict", json={"texts": ["好"]})
    assert reply.status_code == 200 and reply.json()["results"] == predictor.predict(["好"])


def server_main_fails(argv, capsys) -> str:
    """The one line the server prints when it refuses ``argv`` (exit status 2)."""
    assert load_server_module().main(argv) == 2
    return capsys.readouterr().err.strip()


def test_server_and_infer_refuse_gpu_flags_for_onnx_and_bad_flags_before_loading_anything(capsys):
    import argparse

    from ernie_tiny.deploy.predictor import add_backend_arguments, backend_options

    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    assert backend_options(parser.parse_args(["--backend", "paddle", "--gpu_id", "3"]))["gpu_id"] == 3
    assert "tensorrt" not in backend_options(parser.parse_args(["--backend", "onnx"]))
    assert backend_options(parser.parse_args(["--backend", "onnx-int8", "--spin"]))["spin"] is True
    assert server_main_fails(["--model_dir", "no/such/dir", "--backend", "openvino", "--spin"], capsys) == \
        "error: --spin is for the onnxruntime backends (onnx, onnx-fused, onnx-int8) and auto, not --backend openvino"
    assert backend_options(parser.parse_args(["--backend", "openvino", "--static_shapes", "0"]))["static_shapes"] == 0
    assert "static_shapes" not in backend_options(parser.parse_args(["--backend", "openvino"]))  # the backend's default
    assert server_main_fails(["--model_dir", "no/such/dir", "--backend", "onnx", "--static_shapes", "2"], capsys) == \
        "error: --static_shapes is a count (0 or more) for the openvino backends (openvino, openvino-int8, " \
        "openvino-bf16) and auto, " \
        "not --backend onnx"
    assert backend_options(parser.parse_args(["--compile_shapes", "1x128", "32X128"]))["compile_shapes"] == \
        [(1, 128), (32, 128)]
    for flags, message in [
            (["--backend", "onnx", "--compile_shapes", "1x16"], "--compile_shapes is for the openvino backends"),
            (["--compile_shapes", "1x16", "2x16", "--static_shapes", "1"],
             "--compile_shapes gives 2 shapes; --static_shapes allows at most 1")]:
        assert server_main_fails(["--model_dir", "no/such/dir", *flags], capsys).startswith(f"error: {message}"), flags
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile_shapes", "128"])
    assert "'128': a shape is batch x length, e.g. 32x128" in capsys.readouterr().err
    server = load_server_module()
    assert server.main(["--model_dir", "no/such/dir", "--backend", "onnx", "--device", "gpu"]) == 2
    assert "--backend onnx runs on CPU in fp32" in capsys.readouterr().err
    assert server.main(["--model_dir", "no/such/dir"]) == 2
    assert capsys.readouterr().err == "error: no/such/dir: no such directory (make an inference directory with " \
                                      "tools/export.py)\n"
    with pytest.raises(SystemExit) as exit_:
        server.main(["--model_dir", "no/such/dir", "--max_texts", "0"])
    assert exit_.value.code == 2 and "--max_texts: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        server.main(["--model_dir", "no/such/dir", "--port", "99999"])
    assert exit_.value.code == 2 and "--port: a port is 0 to 65535, got 99999" in capsys.readouterr().err
    warmup = {flags: server.parse_args(["--model_dir", "m", *flags]).warmup
              for flags in ((), ("--warmup",), ("--warmup", "30"), ("--warmup", "inf"))}
    assert warmup == {(): None, ("--warmup",): server.WARMUP_SECONDS, ("--warmup", "30"): 30.0,
                      ("--warmup", "inf"): float("inf")}
    with pytest.raises(SystemExit):
        server.parse_args(["--model_dir", "m", "--warmup", "-5"])
    assert "--warmup: must be a number of seconds >= 0, got -5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        server.parse_args(["--model_dir", "m", "--warmup", "soon"])
    assert "--warmup: must be a number of seconds >= 0, got soon" in capsys.readouterr().err


def test_a_wrong_content_type_gets_415(served):
    url, predictor, _ = served
    body = json.dumps({"texts": ["好"]})
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}):
        reply = httpx.post(f"{url}/predict", content=body, headers=headers)
        assert reply.status_code == 415 and "send the body as application/json" in reply.json()["detail"], headers
    reply = httpx.post(f"{url}/predict", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert reply.status_code == 200 and reply.json()["results"] == predictor.predict(["好"])


def test_the_openapi_schema_describes_predict_with_its_limits_and_errors_and_the_v2_answers(served):
    url, _, _ = served
    operation = httpx.get(f"{url}/openapi.json").json()["paths"]["/predict"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["texts"] and body["additionalProperties"] is False
    assert body["properties"]["texts"]["maxItems"] == MAX_TEXTS
    assert body["properties"]["texts"]["items"]["maxLength"] == MAX_CHARS and "text_pairs" not in body["properties"]
    assert set(operation["responses"]) == {"200", "400", "413", "415", "422"}
    infer = httpx.get(f"{url}/openapi.json").json()["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert set(infer["responses"]) == {"200", "400", "404", "413", "500"}
    assert [(p["name"], p["in"], p["example"]) for p in infer["parameters"]] == [("model_name", "path",
                                                                                 "review_sentiment")]
    inputs = infer["requestBody"]["content"]["application/json"]["schema"]["properties"]["inputs"]
    assert set(inputs["items"]["required"]) == {"name", "shape", "datatype"}  # $defs written in place


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(served, tmp_path):
    """Schemathesis (its CLI, every check) fuzzes every operation of the OpenAPI schema (/predict,
    /health, the v2 protocol's): bounded examples and time, a fixed seed. The body limit is one no
    schema-valid /predict body reaches (its JSON schema can state the text limits, not a byte count)."""
    _, predictor, _ = served
    server_module = load_server_module()
    app = server_module.create_app(predictor, server_module.Limits(MAX_TEXTS, MAX_CHARS, 1 << 16), max_wait_ms=1)
    with serve_in_background(app) as url:
        done = fuzz(url, tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Tested: 11" in done.stdout, done.stdout[-3000:]  # every operation, none failed (the exit status)


def fuzz(url: str, workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
         "--config-file", str(ROOT / "deploy/serving/schemathesis.toml"), "run", f"{url}/openapi.json",
         "--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-examples", "50", "--max-time", "20",
         "--seed", "1", "--workers", "1", "--request-timeout", "10", "--no-color", "--report-dir", str(workdir)],
        capture_output=True, text=True, timeout=120, cwd=workdir)


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(served):
    """A real server process: a request waits in the batcher (--max_wait_ms 1500) when SIGTERM comes;
    it is still answered with 200, then the process exits 0."""
    _, predictor, _ = served
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy/serving/server.py"), "--model_dir", str(predictor.model_dir),
         "--port", str(port), "--backend", "paddle", "--threads", "1", "--max_wait_ms", "1500", "--warmup", "0",
         "--batch_size", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert process.poll() is None and time.time() < deadline, "the server did not start"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            started = time.time()
            reply = pool.submit(httpx.post, f"{url}/predict", json={"texts": TEXTS[:2]}, timeout=30)
            time.sleep(0.5)
            assert not reply.done()  # still waiting for its batch
            process.send_signal(signal.SIGTERM)
            answer = reply.result()
        assert answer.status_code == 200 and answer.json()["results"] == predictor.predict(TEXTS[:2])
        assert time.time() - started >= 1.4  # it was answered after its batch's wait, not cut short
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate()[0]
    assert "Finished server process" in output, output
    shapes = 4 * -(-predictor.max_length // 16)  # --warmup: every batch size x padded length, before serving,
    assert f"warmed up: 1 of {shapes} batch x length shapes in " in output, output  # but a 0 s budget: the cheapest
    assert f"(--warmup 0 s reached: the other {shapes - 1} get their first call from requests)" in output, output


def test_the_serving_load_benchmark_counts_every_request(served, tmp_path):
    """tools/benchmark.py serving against the running server, briefly (what it reports, not how fast)."""
    from ernie_tiny.benchmarks.cli import main

    url, _, app = served
    before = app.state.batcher.stats.requests
    report, raw = tmp_path / "serving" / "load.md", tmp_path / "load.json"
    assert main(["serving", "--url", url, "--clients", "4", "--seconds", "1", "--warmup_seconds", "0.2",
                 "--output", str(report), "--json", str(raw)]) == 0
    result = json.loads(raw.read_text())["result"]
    assert result["errors"] == 0 and result["requests"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert app.state.batcher.stats.requests - before >= result["requests"]  # warm-up requests are not timed
    assert result["requests_per_call"] >= 1 and "| requests | errors | requests/s |" in report.read_text()
    assert main(["serving", "--clients", "2"]) == 2  # neither --model_dir nor --url
    assert main(["serving", "--url", url, "--server_warmup"]) == 2  # it would start no server to warm up
    from ernie_tiny.benchmarks.serving_load import add_arguments, command_line

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert "--model_dir out --backend auto" in command_line(parser.parse_args(["--model_dir", "out", "--server_warmup"]))
    assert command_line(parser.parse_args(["--model_dir", "out", "--server_warmup"])).split(" --clients")[0].endswith(
        " --server_warmup")
