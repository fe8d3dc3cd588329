"""A JSON document the deploy side is sent or reads, checked in one place: an HTTP request's
body, read within the server's size limit (``read_body``), decoded and validated by a pydantic
model (``parse_json``), and pydantic's validation errors as one line (``validation_problems``).
``error(status, message)`` makes the caller's exception: ``HTTPException`` for ``/predict``
(``{"detail": ...}``), ``ProtocolError`` for the KServe v2 routes (``{"error": ...}``)."""
from __future__ import annotations

import json
from typing import Callable, Type, TypeVar

import pydantic

Model = TypeVar("Model", bound=pydantic.BaseModel)
ErrorFactory = Callable[[int, str], Exception]


def validation_problems(err: pydantic.ValidationError, whole: str = "body") -> str:
    """``key.path: message; ...`` for each of pydantic's errors (``whole`` names the document itself)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in err.errors())


async def read_body(request, max_bytes: int, error: ErrorFactory) -> bytes:
    """The body of a Starlette ``request``: 413 past ``max_bytes`` (declared, then read), 400 a
    compressed one (``Content-Encoding``)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise error(413, f"request body has {declared} bytes; at most {max_bytes}")
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise error(400, f"Content-Encoding {encoding!r} is not supported: send the request uncompressed")
    body = await request.body()
    if len(body) > max_bytes:
        raise error(413, f"request body has {len(body)} bytes; at most {max_bytes}")
    return body


def parse_json(data: bytes, model: Type[Model], error: ErrorFactory, what: str,
               shape_status: int, expected: str) -> Model:
    """``data`` as UTF-8 JSON validated by ``model``: 400 naming ``what`` when it is not UTF-8 or
    not JSON, ``shape_status`` with ``expected: <problems>`` when it is JSON of the wrong shape."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(400, f"{what} is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(400, f"{what} is not valid JSON: {err.msg} (line {err.lineno} column {err.colno})") from None
    try:
        return model.model_validate(parsed)
    except pydantic.ValidationError as err:
        raise error(shape_status, f"{expected}: {validation_problems(err)}") from None
