"""The KServe v2 / Triton HTTP inference protocol over a ``Predictor``: routes for the server's FastAPI app.

    GET  /v2                                        server metadata
    GET  /v2/health/live, /v2/health/ready          200 while live / ready to infer
    GET  /v2/models/<name>[/versions/1]             model metadata (inputs, outputs)
    GET  /v2/models/<name>[/versions/1]/ready       200 when the model is ready
    POST /v2/models/<name>[/versions/1]/infer       inference

Inputs: ``text`` (and ``text_pair`` for pair tasks), datatype ``BYTES`` (UTF-8 text), shape ``[N]``
or ``[N, 1]``, given as JSON ``data`` or with the binary tensor data extension (tritonclient's
default: ``parameters.binary_data_size`` in the JSON header, the tensors after it, the header's
length in ``Inference-Header-Content-Length``). Outputs, shape ``[N]``: for sequence tasks
``label`` (BYTES) and ``score`` (FP32, the label's probability); for token tasks ``result``
(BYTES, per text the JSON that ``POST /predict`` gives). Outputs are JSON unless the request asks
for binary (``parameters.binary_data_output`` or an output's ``parameters.binary_data``).

Errors have the protocol's body ``{"error": "..."}``: 400 a malformed request (an unknown input or
output name, a wrong datatype or shape, data that does not match the shape), 404 an unknown model
or version, 413 a request over the server's limits, 500 a failure inside the predictor. The
routes' OpenAPI entries name these answers, the path parameters and the JSON inference body.
"""
from __future__ import annotations

import json
import re
import struct
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import numpy as np
import pydantic
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ernie_tiny.deploy.json_body import parse_json, read_body

MODEL_VERSION = "1"
HEADER_LENGTH = "Inference-Header-Content-Length"
TEXT, TEXT_PAIR = "text", "text_pair"
LABEL, SCORE, RESULT = "label", "score", "result"
SHARED_MEMORY_KEYS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


class ErrorBody(pydantic.BaseModel):
    error: str = pydantic.Field(description="what is wrong")


ERRORS = {400: "a malformed request: an unknown input or output name, a wrong datatype or shape, data that does "
               "not match the shape, a body that is not the protocol's JSON",
          404: "an unknown model or version", 413: "a request over the server's limits",
          500: "a failure inside the predictor"}


def error_responses(*statuses: int) -> dict:
    """FastAPI ``responses=`` for the protocol's errors ``statuses`` (and 503 "not ready"), for the OpenAPI schema."""
    responses = {status: {"model": ErrorBody, "description": ERRORS[status]} for status in statuses if status != 503}
    if 503 in statuses:
        responses[503] = {"description": "not ready (starting or shutting down)"}
    return responses


def path_parameters(path: str, examples: Dict[str, str]) -> dict:
    """OpenAPI ``parameters`` for the ``{name}`` parts of ``path`` (strings), with their ``examples``."""
    return {"parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"},
                            "example": examples[name]} for name in re.findall(r"{(\w+)}", path)]}


def inlined_schema(model: type) -> dict:
    """``model``'s JSON schema with its ``$defs`` written in place (an OpenAPI ``openapi_extra``
    schema cannot point into its own ``$defs``)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            return inline(defs[node["$ref"].rsplit("/", 1)[-1]]) if "$ref" in node else \
                {key: inline(value) for key, value in node.items()}
        return [inline(value) for value in node] if isinstance(node, list) else node

    return inline(schema)


class ProtocolError(Exception):
    """A request the protocol answers with ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# -- the protocol's JSON objects --------------------------------------------------------------
class TensorMetadata(pydantic.BaseModel):
    name: str
    datatype: str
    shape: List[int]


class ModelMetadata(pydantic.BaseModel):
    name: str
    versions: List[str]
    platform: str
    inputs: List[TensorMetadata]
    outputs: List[TensorMetadata]


class RequestInput(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: pydantic.StrictStr
    shape: List[pydantic.StrictInt]
    datatype: pydantic.StrictStr
    parameters: Dict[str, Any] = pydantic.Field(default_factory=dict)
    data: Optional[list] = None


class RequestOutput(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: pydantic.StrictStr
    parameters: Dict[str, Any] = pydantic.Field(default_factory=dict)


class InferenceRequest(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    id: Optional[pydantic.StrictStr] = None
    parameters: Dict[str, Any] = pydantic.Field(default_factory=dict)
    inputs: List[RequestInput] = pydantic.Field(min_length=1)
    outputs: Optional[List[RequestOutput]] = None


class ResponseOutput(pydantic.BaseModel):
    name: str
    datatype: str
    shape: List[int]
    parameters: Optional[Dict[str, Any]] = None
    data: Optional[list] = None


class InferenceResponse(pydantic.BaseModel):
    model_name: str
    model_version: str
    id: Optional[str] = None
    outputs: List[ResponseOutput]


def model_metadata(predictor, name: str) -> ModelMetadata:
    """What ``GET /v2/models/<name>`` answers: the inputs the predictor takes, the outputs it gives."""
    inputs = [TensorMetadata(name=TEXT, datatype="BYTES", shape=[-1])]
    if predictor.input_type == "pair":
        inputs.append(TensorMetadata(name=TEXT_PAIR, datatype="BYTES", shape=[-1]))
    if predictor.head == "sequence":
        outputs = [TensorMetadata(name=LABEL, datatype="BYTES", shape=[-1]),
                   TensorMetadata(name=SCORE, datatype="FP32", shape=[-1])]
    else:
        outputs = [TensorMetadata(name=RESULT, datatype="BYTES", shape=[-1])]
    return ModelMetadata(name=name, versions=[MODEL_VERSION], platform=predictor.backend.description,
                         inputs=inputs, outputs=outputs)


# -- request: bytes -> texts --------------------------------------------------------------------
def split_body(body: bytes, header_length: Optional[str]) -> Tuple[bytes, bytes]:
    """(JSON header, binary tensor data) of a request body; all JSON without the length header."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise ProtocolError(400, f"{HEADER_LENGTH} {header_length!r} is not a length within the "
                                 f"{len(body)}-byte body")
    return body[:int(header_length)], body[int(header_length):]


def split_bytes_tensor(raw: bytes, name: str) -> List[bytes]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length, then its bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError(400, f"input {name!r}: binary BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(400, f"input {name!r}: binary BYTES element {len(elements)} has length {length}, "
                                     f"past the end of its data")
        elements.append(raw[offset:offset + length])
        offset += length
    return elements


def flatten(data: list) -> list:
    """Row-major elements of JSON tensor data, flat or nested as the shape."""
    return [item for value in data for item in (flatten(value) if isinstance(value, list) else [value])]


def binary_parts(request: InferenceRequest, binary: bytes) -> Dict[str, bytes]:
    """{input name: its binary data}, cut from the body in the order the inputs have binary_data_size."""
    parts, offset = {}, 0
    for tensor in request.inputs:
        if any(key in tensor.parameters for key in SHARED_MEMORY_KEYS):
            raise ProtocolError(400, f"input {tensor.name!r}: shared memory is not supported by this server")
        size = tensor.parameters.get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise ProtocolError(400, f"input {tensor.name!r}: binary_data_size {size!r} does not fit the "
                                     f"{len(binary) - offset} bytes of binary data left")
        parts[tensor.name] = binary[offset:offset + size]
        offset += size
    if offset != len(binary):
        raise ProtocolError(400, f"{len(binary) - offset} bytes of binary data after the inputs that declare it")
    return parts


def text_count(tensor: RequestInput) -> int:
    """N of a ``[N]`` or ``[N, 1]`` BYTES input."""
    shape = tensor.shape
    if len(shape) not in (1, 2) or shape[0] < 1 or (len(shape) == 2 and shape[1] != 1):
        raise ProtocolError(400, f"input {tensor.name!r} has shape {shape}; this model takes [N] or [N, 1] texts "
                                 f"(N >= 1)")
    return shape[0]


def tensor_texts(tensor: RequestInput, binary: Optional[bytes]) -> List[str]:
    """The input's texts (UTF-8), as many as its shape says."""
    if tensor.datatype != "BYTES":
        raise ProtocolError(400, f"input {tensor.name!r} has datatype {tensor.datatype}; this model takes BYTES "
                                 f"(UTF-8 text)")
    count = text_count(tensor)
    if binary is not None and tensor.data is not None:
        raise ProtocolError(400, f"input {tensor.name!r} has both JSON data and binary_data_size")
    if binary is not None:
        raw = split_bytes_tensor(binary, tensor.name)
        try:
            items = [element.decode("utf-8") for element in raw]
        except UnicodeDecodeError:
            raise ProtocolError(400, f"input {tensor.name!r}: an element is not valid UTF-8") from None
    elif tensor.data is not None:
        items = flatten(tensor.data)
        if not all(isinstance(item, str) for item in items):
            raise ProtocolError(400, f"input {tensor.name!r}: BYTES data in JSON must be strings")
    else:
        raise ProtocolError(400, f"input {tensor.name!r} has no data (neither JSON data nor binary_data_size)")
    if len(items) != count:
        raise ProtocolError(400, f"input {tensor.name!r} has shape {tensor.shape} but {len(items)} elements")
    return items


def text_problem(name: str, texts: List[str], max_chars: int) -> Optional[Tuple[int, str]]:
    """The first text over ``max_chars`` (413) or not encodable as UTF-8 (400, a lone surrogate),
    as (status, message naming ``name[i]``); None when all are fine. Both APIs of the server use it."""
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            return 413, f"{name}[{i}] has {len(text)} characters; at most {max_chars}"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return 400, f"{name}[{i}] is not valid Unicode (it holds a lone surrogate escape)"
    return None


def check_limits(name: str, texts: List[str], limits) -> None:
    """413 past the server's limits (texts per request, characters per text); 400 a lone surrogate."""
    if len(texts) > limits.max_texts:
        raise ProtocolError(413, f"input {name!r} has {len(texts)} texts; at most {limits.max_texts} per request")
    problem = text_problem(f"input {name!r}", texts, limits.max_chars)
    if problem:
        raise ProtocolError(*problem)


def request_texts(request: InferenceRequest, binary: bytes, metadata: ModelMetadata,
                  limits) -> Tuple[List[str], Optional[List[str]]]:
    """(texts, text pairs or None) of a request, checked against the model's inputs and the limits."""
    expected = [tensor.name for tensor in metadata.inputs]
    parts = binary_parts(request, binary)
    given: Dict[str, List[str]] = {}
    for tensor in request.inputs:
        if tensor.name not in expected:
            raise ProtocolError(400, f"unexpected input {tensor.name!r}: model {metadata.name!r} takes "
                                     f"{', '.join(map(repr, expected))}")
        if tensor.name in given:
            raise ProtocolError(400, f"input {tensor.name!r} is given twice")
        given[tensor.name] = tensor_texts(tensor, parts.get(tensor.name))
        check_limits(tensor.name, given[tensor.name], limits)
    missing = [name for name in expected if name not in given]
    if missing:
        raise ProtocolError(400, f"missing input {', '.join(map(repr, missing))}: model {metadata.name!r} takes "
                                 f"{', '.join(map(repr, expected))}")
    pairs = given.get(TEXT_PAIR)
    if pairs is not None and len(pairs) != len(given[TEXT]):
        raise ProtocolError(400, f"{len(given[TEXT])} texts but {len(pairs)} text pairs")
    return given[TEXT], pairs


# -- response: predictor results -> bytes ---------------------------------------------------------
def requested_outputs(request: InferenceRequest, metadata: ModelMetadata) -> Dict[str, bool]:
    """{output name: in binary?}, in the order to answer: the requested outputs, or all of them."""
    known = [tensor.name for tensor in metadata.outputs]
    default_binary = bool(request.parameters.get("binary_data_output", False))
    if request.outputs is None:
        return {name: default_binary for name in known}
    chosen = {}
    for output in request.outputs:
        if output.name not in known:
            raise ProtocolError(400, f"unknown output {output.name!r}: model {metadata.name!r} gives "
                                     f"{', '.join(map(repr, known))}")
        if output.parameters.get("classification") or any(key in output.parameters for key in SHARED_MEMORY_KEYS):
            raise ProtocolError(400, f"output {output.name!r}: the classification and shared-memory extensions "
                                     f"are not supported by this server")
        chosen[output.name] = bool(output.parameters.get("binary_data", default_binary))
    return chosen


def output_values(results: List[dict], head: str) -> Dict[str, Tuple[str, list]]:
    """{output name: (datatype, one value per text)} from ``Predictor.predict`` results."""
    if head == "sequence":
        return {LABEL: ("BYTES", [r["label"] for r in results]), SCORE: ("FP32", [r["score"] for r in results])}
    return {RESULT: ("BYTES", [json.dumps(r, ensure_ascii=False) for r in results])}


def serialize(datatype: str, values: list) -> bytes:
    """The binary tensor data of an output: BYTES length-prefixed (little-endian), FP32 raw little-endian."""
    if datatype == "BYTES":
        encoded = [str(value).encode("utf-8") for value in values]
        return b"".join(struct.pack("<I", len(item)) + item for item in encoded)
    return np.asarray(values, dtype="<f4").tobytes()


def encode_response(model: str, request_id: Optional[str], values: Dict[str, Tuple[str, list]],
                    binary: Dict[str, bool]) -> Response:
    """The inference response: JSON, or a JSON header followed by the binary outputs."""
    outputs, chunks = [], []
    for name, in_binary in binary.items():
        datatype, data = values[name]
        if in_binary:
            raw = serialize(datatype, data)
            chunks.append(raw)
            outputs.append(ResponseOutput(name=name, datatype=datatype, shape=[len(data)],
                                          parameters={"binary_data_size": len(raw)}))
        else:
            outputs.append(ResponseOutput(name=name, datatype=datatype, shape=[len(data)], data=data))
    body = InferenceResponse(model_name=model, model_version=MODEL_VERSION, id=request_id, outputs=outputs)
    header = json.dumps(body.model_dump(exclude_none=True), ensure_ascii=False).encode("utf-8")
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(chunks), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(header))})


# -- routes -----------------------------------------------------------------------------------
async def protocol_error_response(_request: Request, err: ProtocolError) -> JSONResponse:
    return JSONResponse({"error": err.message}, status_code=err.status)


def add_v2_routes(app: FastAPI, predictor, submit: Callable[[List[str], Optional[List[str]]], Awaitable[list]],
                  limits, model_name: str, is_ready: Callable[[], bool], server_version: str = "") -> None:
    """Register the v2 routes on ``app``: ``submit(texts, pairs)`` runs the predictor (the server's
    micro-batcher), ``is_ready()`` says whether it can, ``limits`` are the server's (``Limits``)."""
    metadata = model_metadata(predictor, model_name)
    app.add_exception_handler(ProtocolError, protocol_error_response)

    def check_model(request: Request) -> None:
        name, version = request.path_params["model_name"], request.path_params.get("version")
        if name != model_name:
            raise ProtocolError(404, f"unknown model {name!r}: this server serves {model_name!r}")
        if version is not None and version != MODEL_VERSION:
            raise ProtocolError(404, f"model {model_name!r} has no version {version!r} (only {MODEL_VERSION!r})")

    async def server_metadata() -> dict:
        return {"name": "ernie-tiny", "version": server_version, "extensions": ["binary_tensor_data"]}

    async def live() -> dict:
        return {"live": True}

    async def ready() -> JSONResponse:
        return JSONResponse({"ready": is_ready()}, status_code=200 if is_ready() else 503)

    async def get_model_metadata(request: Request) -> dict:
        check_model(request)
        return metadata.model_dump()

    async def model_ready(request: Request) -> JSONResponse:
        check_model(request)
        return JSONResponse({"name": model_name, "ready": is_ready()}, status_code=200 if is_ready() else 503)

    async def infer(request: Request) -> Response:
        check_model(request)
        header, binary = split_body(await read_body(request, limits.max_body_bytes, ProtocolError),
                                    request.headers.get(HEADER_LENGTH))
        parsed = parse_json(header, InferenceRequest, ProtocolError, "the request", 400, "not a v2 inference request")
        texts, pairs = request_texts(parsed, binary, metadata, limits)
        outputs = requested_outputs(parsed, metadata)
        try:
            results = await submit(texts, pairs)
        except Exception as err:  # the protocol's error body, not a bare 500
            raise ProtocolError(500, f"inference failed: {type(err).__name__}: {err}") from err
        return encode_response(model_name, parsed.id, output_values(results, predictor.head), outputs)

    app.add_api_route("/v2", server_metadata, methods=["GET"])
    app.add_api_route("/v2/health/live", live, methods=["GET"])
    app.add_api_route("/v2/health/ready", ready, methods=["GET"], responses=error_responses(503))
    for model_path in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{version}"):
        # the handlers read the path parameters from the request; the schema still names them
        documented = {"openapi_extra": path_parameters(model_path, {"model_name": model_name,
                                                                    "version": MODEL_VERSION})}
        app.add_api_route(model_path, get_model_metadata, methods=["GET"], responses=error_responses(404),
                          **documented)
        app.add_api_route(model_path + "/ready", model_ready, methods=["GET"], responses=error_responses(404, 503),
                          **documented)
        infer_body = {"requestBody": {"required": True, "content": {
            "application/json": {"schema": inlined_schema(InferenceRequest)}}}}  # or binary tensors after it
        app.add_api_route(model_path + "/infer", infer, methods=["POST"], responses=error_responses(400, 404, 413, 500),
                          openapi_extra={**documented["openapi_extra"], **infer_body})
