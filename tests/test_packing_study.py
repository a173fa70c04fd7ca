"""The packing study's packed feeds: positions and segments per text, and where each text starts."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.studies.packing import first_tokens, packed_feeds

pytestmark = pytest.mark.core
GROUP = [[101, 7, 8, 102], [101, 9, 102], [101, 102]]


def test_packed_feeds_count_positions_and_segments_per_text() -> None:
    feeds = packed_feeds(GROUP)
    assert feeds["input_ids"].tolist() == [[101, 7, 8, 102, 101, 9, 102, 101, 102]]
    assert feeds["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 1]]
    assert feeds["segment_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 2, 2]]


def test_first_tokens_are_the_rows_where_each_text_starts() -> None:
    output = np.arange(9, dtype=np.float32).reshape(1, 9, 1)  # row k holds k
    assert first_tokens(output, GROUP)[:, 0].tolist() == [0, 4, 7]
