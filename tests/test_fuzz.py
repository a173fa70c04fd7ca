"""Property tests: any list of texts embeds, and any bad item fails before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the test extra is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gist_onnx import Embedder  # noqa: E402


@pytest.fixture(scope="module")
def embedder(core_model: Path) -> Embedder:
    return Embedder(core_model, provider="cpu")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=300), max_size=12))
def test_fuzz_any_unicode_list(embedder: Embedder, texts: list[str]) -> None:
    vectors = embedder.encode(texts, batch_size=5)
    assert vectors.shape == (len(texts), embedder.dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    if texts:
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        alone = np.stack([embedder.encode(t) for t in texts])
        assert _cosines(alone, vectors).min() >= 0.99999


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(st.text(max_size=20), st.none(), st.binary(max_size=5), st.integers()),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_mixed_types_fail_before_work_or_succeed(embedder: Embedder, items: list[object]) -> None:
    bad = next((i for i, item in enumerate(items) if not isinstance(item, str)), None)
    if bad is None:
        assert embedder.encode(items).shape == (len(items), embedder.dim)  # type: ignore[arg-type]
    else:
        with pytest.raises(TypeError, match=f"text {bad} is {type(items[bad]).__name__}"):
            embedder.encode(items)  # type: ignore[arg-type]
