"""The wire formats: OpenAI's and TEI's embedding requests in, their responses and errors out.

Parsing is strict and says where a request is wrong (the field, the index of a bad item), so a
client error is answered here and never reaches the inference worker.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

# langchain-openai sends token ids unless told not to; say how, in the error.
TOKEN_IDS_HINT = (
    "input must be text: token-id input (lists of integers) is not supported, since this server "
    "tokenizes with the model's own tokenizer. Pass the strings themselves; with langchain-openai, "
    "OpenAIEmbeddings(..., check_embedding_ctx_length=False)"
)


class ApiError(Exception):
    """An error answered as OpenAI does: ``{"error": {"message", "type", "code", "param"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type_, param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


@dataclass(frozen=True)
class EmbedRequest:
    """What either route asks for, once validated."""

    texts: list[str]
    normalize: bool | None  # None: the model's own setting
    truncate: bool | None  # None: the server's --auto-truncate
    base64: bool = False


def _texts(value: object, field: str, max_inputs: int) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ApiError(400, f"'{field}' must be a string or a list of strings", "invalid_type", param=field)
    if not value:
        raise ApiError(400, f"'{field}' is empty: send at least one text", "empty_input", param=field)
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value) or any(
        isinstance(item, list) for item in value
    ):
        raise ApiError(400, TOKEN_IDS_HINT, "token_ids_not_supported", param=field)
    if len(value) > max_inputs:
        raise ApiError(
            413,
            f"'{field}' has {len(value)} texts; this server takes at most {max_inputs} per request",
            "too_many_inputs",
            param=field,
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            kind = "null" if item is None else type(item).__name__
            raise ApiError(400, f"{field}[{index}] must be a string, got {kind}", "invalid_type", param=field)
        if not item:
            raise ApiError(400, f"{field}[{index}] is an empty string", "empty_input", param=field)
    return value


def _optional_bool(body: dict[str, Any], field: str) -> bool | None:
    value = body.get(field)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"'{field}' must be true or false", "invalid_type", param=field)
    return value


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_type")
    return body


def parse_openai(body: object, dim: int, max_inputs: int) -> EmbedRequest:
    """OpenAI's ``POST /v1/embeddings``: input, model, encoding_format, dimensions, user."""
    body = _object(body)
    if "input" not in body:
        raise ApiError(400, "'input' is required", "missing_field", param="input")
    texts = _texts(body["input"], "input", max_inputs)
    if not isinstance(body.get("model", ""), str):
        raise ApiError(400, "'model' must be a string", "invalid_type", param="model")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(
            400, "'encoding_format' must be 'float' or 'base64'", "invalid_value", param="encoding_format"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != dim:
        raise ApiError(
            400,
            f"'dimensions' must be null or {dim}: this model is not trained for shorter vectors",
            "invalid_value",
            param="dimensions",
        )
    return EmbedRequest(texts, normalize=None, truncate=None, base64=encoding == "base64")


def parse_tei(body: object, max_inputs: int) -> EmbedRequest:
    """text-embeddings-inference's ``POST /embed``: inputs, normalize, truncate."""
    body = _object(body)
    if "inputs" not in body:
        raise ApiError(400, "'inputs' is required", "missing_field", param="inputs")
    texts = _texts(body["inputs"], "inputs", max_inputs)
    normalize = _optional_bool(body, "normalize")
    return EmbedRequest(
        texts, normalize=True if normalize is None else normalize, truncate=_optional_bool(body, "truncate")
    )


def openai_response(vectors: np.ndarray, model: str, tokens: int, as_base64: bool) -> dict[str, Any]:
    """OpenAI's response: a list of embedding objects, the model, and the real token counts."""
    if as_base64:  # little-endian float32 bytes, as the openai client decodes them
        rows = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in vectors]
    else:
        rows = list(vectors)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
