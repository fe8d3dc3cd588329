"""The server's KServe v2 / Triton HTTP protocol (ernie_tiny/deploy/kserve_v2.py), spoken by the
official client (tritonclient[http]) to servers on 127.0.0.1 over tiny exported models: a
single-text task (review_sentiment) and a pair task (pd_next_paragraph). Plus the binary tensor
format on its own."""
import struct

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from test_export import TEXTS
from test_serving import exported_predictor, load_server_module, serve_in_background

MAX_TEXTS, MAX_CHARS = 8, 100
PAIRS = ["物流也快", "一般", "还不错", "克林顿", "不好"]


def start(tmp_path_factory, task: str, *export_overrides: str):
    """(predictor, app): the server's app over a tiny exported ``task`` model."""
    predictor = exported_predictor(tmp_path_factory.mktemp(task), task, *export_overrides)
    server = load_server_module()
    app = server.create_app(predictor, server.Limits(MAX_TEXTS, MAX_CHARS, 1 << 16), batch_size=16, max_wait_ms=5)
    return predictor, app


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    predictor, app = start(tmp_path_factory, "review_sentiment")
    with serve_in_background(app) as url:
        client = httpclient.InferenceServerClient(url=url.removeprefix("http://"), connection_timeout=10,
                                                  network_timeout=60)
        yield client, url, predictor, "review_sentiment"
        client.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    # the card's 256 tokens are past the tiny model's 130 positions
    predictor, app = start(tmp_path_factory, "pd_next_paragraph", "Export.max_length=128")
    with serve_in_background(app) as url:
        client = httpclient.InferenceServerClient(url=url.removeprefix("http://"), connection_timeout=10,
                                                  network_timeout=60)
        yield client, url, predictor, "pd_next_paragraph"
        client.close()


def text_input(name: str, texts, binary: bool = True):
    tensor = httpclient.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode("utf-8") for t in texts], dtype=np.object_), binary_data=binary)
    return tensor


def labels_and_scores(result):
    labels = [v.decode("utf-8") if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
    return labels, result.as_numpy("score").tolist()


def test_health_and_metadata(single):
    client, _, predictor, name = single
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
    metadata = client.get_model_metadata(name)
    assert metadata["name"] == name and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                                   {"name": "score", "datatype": "FP32", "shape": [-1]}]
    assert client.get_model_metadata(name, model_version="1") == metadata
    assert not client.is_model_ready("no_such_model")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_batch_of_texts_gets_the_predictor_labels_and_scores(single, binary):
    client, _, predictor, name = single
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("label", "score")]
    result = client.infer(name, [text_input("text", TEXTS, binary)], outputs=outputs, request_id="r1")
    expected = predictor.predict(TEXTS)
    labels, scores = labels_and_scores(result)
    assert labels == [e["label"] for e in expected]
    assert scores == pytest.approx([e["score"] for e in expected], abs=1e-6)
    assert result.get_response()["model_name"] == name and result.get_response()["id"] == "r1"
    assert result.as_numpy("score").dtype == np.float32 and result.as_numpy("label").shape == (len(TEXTS),)


def test_default_request_gets_every_output_in_binary_and_one_output_when_asked(single):
    client, _, predictor, name = single
    result = client.infer(name, [text_input("text", TEXTS[:2])])  # tritonclient asks binary_data_output
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert labels_and_scores(result)[0] == [e["label"] for e in predictor.predict(TEXTS[:2])]
    only_score = client.infer(name, [text_input("text", TEXTS[:2])], outputs=[httpclient.InferRequestedOutput("score")])
    assert only_score.as_numpy("label") is None and only_score.as_numpy("score").shape == (2,)


def test_a_pair_task_takes_text_and_text_pair(pair):
    client, _, predictor, name = pair
    assert [i["name"] for i in client.get_model_metadata(name)["inputs"]] == ["text", "text_pair"]
    result = client.infer(name, [text_input("text", TEXTS), text_input("text_pair", PAIRS, binary=False)])
    expected = predictor.predict(TEXTS, PAIRS)
    labels, scores = labels_and_scores(result)
    assert labels == [e["label"] for e in expected] and set(labels) <= {"0", "1"}
    assert scores == pytest.approx([e["score"] for e in expected], abs=1e-6)
    with pytest.raises(InferenceServerException) as info:
        client.infer(name, [text_input("text", TEXTS)])
    assert info.value.status() == "400" and "missing input 'text_pair'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer(name, [text_input("text", TEXTS), text_input("text_pair", PAIRS[:2])])
    assert "5 texts but 2 text pairs" in info.value.message()


def test_wrong_input_name_and_wrong_datatype_are_protocol_errors(single):
    client, url, _, name = single
    with pytest.raises(InferenceServerException) as info:
        client.infer(name, [text_input("sentence", TEXTS[:2])])
    assert info.value.status() == "400"
    assert info.value.message() == "unexpected input 'sentence': model 'review_sentiment' takes 'text'"
    numbers = httpclient.InferInput("text", [2], "INT32")
    numbers.set_data_from_numpy(np.array([1, 2], dtype=np.int32))
    with pytest.raises(InferenceServerException) as info:
        client.infer(name, [numbers])
    assert info.value.status() == "400"
    assert info.value.message() == "input 'text' has datatype INT32; this model takes BYTES (UTF-8 text)"
    # the body itself is the protocol's: {"error": "..."}
    reply = httpx.post(f"{url}/v2/models/{name}/infer",
                       json={"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert reply.status_code == 400 and reply.json() == {
        "error": "input 'text' has datatype FP32; this model takes BYTES (UTF-8 text)"}


@pytest.mark.parametrize("body, status, message", [
    ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["好"]}]}, 400,
     "input 'text' has shape [2] but 1 elements"),
    ({"inputs": [{"name": "text", "shape": [1, 2], "datatype": "BYTES", "data": [["好", "坏"]]}]}, 400,
     "takes [N] or [N, 1] texts"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [3]}]}, 400, "must be strings"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES"}]}, 400, "has no data"),
    ({"inputs": []}, 400, "inputs: List should have at least 1 item"),
    ({"input": []}, 400, "inputs: Field required"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["好"]}], "outputs": [{"name": "x"}]},
     400, "unknown output 'x'"),
    ({"inputs": [{"name": "text", "shape": [9], "datatype": "BYTES", "data": ["好"] * 9}]}, 413,
     f"9 texts; at most {MAX_TEXTS} per request"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["长" * 101]}]}, 413,
     f"has 101 characters; at most {MAX_CHARS}"),
])
def test_malformed_requests_get_the_protocol_error_body(single, body, status, message):
    _, url, _, name = single
    reply = httpx.post(f"{url}/v2/models/{name}/infer", json=body)
    assert reply.status_code == status, reply.text
    assert list(reply.json()) == ["error"] and message in reply.json()["error"]


def test_unknown_model_and_version_are_404_and_predict_still_works(single):
    client, url, predictor, name = single
    for path in ("/v2/models/other", "/v2/models/other/infer", f"/v2/models/{name}/versions/2"):
        reply = httpx.get(f"{url}{path}") if not path.endswith("infer") else httpx.post(f"{url}{path}", json={})
        assert reply.status_code == 404 and "error" in reply.json(), path
    reply = httpx.post(f"{url}/v2/models/{name}/infer", content=b"{not json", headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["error"]
    reply = httpx.post(f"{url}/predict", json={"texts": TEXTS[:2]})
    assert reply.status_code == 200 and reply.json()["results"] == predictor.predict(TEXTS[:2])
    assert client.infer(name, [text_input("text", ["好"])]).as_numpy("score").shape == (1,)


def test_curl_style_json_request(single):
    """What the README's curl example sends and gets."""
    _, url, predictor, name = single
    body = {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["质量很好"], ["太差了"]]}]}
    reply = httpx.post(f"{url}/v2/models/{name}/infer", json=body)
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    expected = predictor.predict(["质量很好", "太差了"])
    assert reply.json() == {"model_name": name, "model_version": "1", "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": [e["label"] for e in expected]},
        {"name": "score", "datatype": "FP32", "shape": [2], "data": [e["score"] for e in expected]}]}


def test_binary_bytes_tensors_round_trip_and_malformed_ones_are_named():
    from ernie_tiny.deploy.kserve_v2 import ProtocolError, serialize, split_body, split_bytes_tensor

    raw = serialize("BYTES", ["好", "", "ab"])
    assert raw == struct.pack("<I", 3) + "好".encode() + struct.pack("<I", 0) + struct.pack("<I", 2) + b"ab"
    assert split_bytes_tensor(raw, "text") == ["好".encode(), b"", b"ab"]
    assert np.frombuffer(serialize("FP32", [0.5, 1.0]), dtype="<f4").tolist() == [0.5, 1.0]
    with pytest.raises(ProtocolError, match="element 0 has length 9, past the end"):
        split_bytes_tensor(struct.pack("<I", 9) + b"ab", "text")
    with pytest.raises(ProtocolError, match="ends inside an element's length"):
        split_bytes_tensor(b"\x01\x00", "text")
    assert split_body(b'{"a": 1}xyz', "8") == (b'{"a": 1}', b"xyz")
    with pytest.raises(ProtocolError, match="is not a length within the 3-byte body"):
        split_body(b"abc", "10")
