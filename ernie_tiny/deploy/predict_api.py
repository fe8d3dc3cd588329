"""The bodies of the server's ``POST /predict``, as pydantic models: ``PredictRequest`` validates
requests; the others describe, in the OpenAPI schema, what a client may send (with the server's
limits) and every answer it can get (200, and the 400/413/415/422 errors), so API tools and
generated clients can use the schema."""
from __future__ import annotations

from typing import Annotated, Dict, List, Optional

import pydantic

JSON = "application/json"


class PredictRequest(pydantic.BaseModel):
    """What the server validates (its limits are checked after, as 413s)."""
    model_config = pydantic.ConfigDict(extra="forbid")

    texts: List[pydantic.StrictStr] = pydantic.Field(min_length=1, description="texts to label")
    text_pairs: Optional[List[pydantic.StrictStr]] = pydantic.Field(None, description="second texts (pair tasks)")


class ErrorDetail(pydantic.BaseModel):
    detail: str = pydantic.Field(description="what is wrong with the request, and the limit it broke")


class SequenceResult(pydantic.BaseModel):
    label: str
    score: float = pydantic.Field(ge=0, le=1, description="the label's probability")


class TokenLabel(pydantic.BaseModel):
    token: str
    start: int = pydantic.Field(ge=0, description="character offset in the text")
    label: str
    score: float = pydantic.Field(ge=0, le=1)


class Entity(pydantic.BaseModel):
    type: str
    text: str
    start: int = pydantic.Field(ge=0)
    end: int = pydantic.Field(ge=0)


class TokenResult(pydantic.BaseModel):
    tokens: List[TokenLabel]
    entities: List[Entity] = pydantic.Field(description="BIO entities (none when the labels are not BIO)")
    truncated: bool = pydantic.Field(description="the text was longer than the model's max length")


class SequenceResponse(pydantic.BaseModel):
    results: List[SequenceResult] = pydantic.Field(description="one per text, in order")


class TokenResponse(pydantic.BaseModel):
    results: List[TokenResult] = pydantic.Field(description="one per text, in order")


ERRORS = {
    400: "the body is compressed (Content-Encoding), not UTF-8 or not JSON, or a text is not valid Unicode "
         "(a lone surrogate)",
    413: "the body, the number of texts or a text's length is over the server's limits",
    415: f"the Content-Type is not {JSON}",
    422: "the body is JSON of the wrong shape (no texts, not a list of strings, text pairs missing or miscounted)",
}


def documented_request(max_texts: int, max_chars: int, pair_task: bool) -> dict:
    """The JSON schema of the requests the server accepts: ``PredictRequest`` with its limits,
    and ``text_pairs`` required for pair tasks, absent otherwise."""
    text = Annotated[pydantic.StrictStr, pydantic.Field(max_length=max_chars)]
    texts = Annotated[List[text], pydantic.Field(min_length=1, max_length=max_texts)]
    fields = {"texts": (texts, pydantic.Field(description="texts to label"))}
    if pair_task:
        fields["text_pairs"] = (texts, pydantic.Field(description="second texts, one per text"))
    model = pydantic.create_model("PredictRequestBody", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
    return model.model_json_schema()


def predict_openapi(max_texts: int, max_chars: int, pair_task: bool, head: str) -> dict:
    """``responses`` and ``openapi_extra`` for FastAPI's ``@app.post("/predict", ...)``."""
    ok = TokenResponse if head == "token" else SequenceResponse
    responses: Dict[int, dict] = {200: {"model": ok, "description": "the results"}}
    responses.update({status: {"model": ErrorDetail, "description": why} for status, why in ERRORS.items()})
    body = {"requestBody": {"required": True, "content": {
        JSON: {"schema": documented_request(max_texts, max_chars, pair_task)}}}}
    return {"responses": responses, "openapi_extra": body}
