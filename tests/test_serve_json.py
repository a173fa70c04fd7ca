"""The server's response bodies: written in slices, the event loop free between them, with the
same bytes as one orjson call (no server process: the fast tier)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
import orjson  # noqa: E402

from gist_onnx.serve.app import JSON_SLICE_ROWS, _json_array  # noqa: E402
from gist_onnx.serve.protocol import openai_response  # noqa: E402

WHOLE = orjson.OPT_SERIALIZE_NUMPY


def _vectors(rows: int, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(rows).standard_normal((rows, dim)).astype(np.float32)


@pytest.mark.parametrize("rows", [1, JSON_SLICE_ROWS, JSON_SLICE_ROWS + 1, 2048])
def test_sliced_json_is_byte_identical_to_one_call(rows: int) -> None:
    vectors = _vectors(rows)
    assert orjson.dumps(asyncio.run(_json_array(vectors))) == orjson.dumps(vectors, option=WHOLE)
    for as_base64 in (False, True):  # the OpenAI route splices its data list into the envelope
        response = openai_response(vectors, "gist", 7 * rows, as_base64)
        expected = orjson.dumps(response, option=WHOLE)
        response["data"] = asyncio.run(_json_array(response["data"]))
        assert orjson.dumps(response, option=WHOLE) == expected


def test_sliced_json_of_nothing_is_an_empty_array() -> None:
    assert orjson.dumps(asyncio.run(_json_array([]))) == b"[]"


def test_the_event_loop_runs_other_requests_between_slices() -> None:
    rows = 2048

    async def ticks_while_writing() -> int:
        ticks, writing = 0, True

        async def other_request() -> None:  # stands for a small request's steps on the loop
            nonlocal ticks
            while writing:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.ensure_future(other_request())
        await asyncio.sleep(0)  # it has started and waits for its next turn
        ticks = 0
        await _json_array(_vectors(rows))
        writing = False
        await other
        return ticks

    # Every slice after the first gives the loop one turn; one orjson call would give it none.
    assert asyncio.run(ticks_while_writing()) >= rows // JSON_SLICE_ROWS - 1
