"""Property-based tests (hypothesis) of the statistics and of the routing."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from statsmodels.stats.weightstats import DescrStatsW

from interp.model import route
from interp.stats import Moments, StatsOptions, describe_cells

unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=64)


def cell_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of one cell through the streaming path: moments merged over two batches."""
    half = len(values) // 2
    moments = Moments.of(values[:half, None]).merge(Moments.of(values[half:, None]))
    cells = describe_cells(moments, 1 / 7, StatsOptions(level=level))
    return float(cells["mean"].iloc[0]), float(cells["low"].iloc[0]), float(cells["high"].iloc[0])


@settings(max_examples=60, deadline=None)
@given(values=arrays(np.float64, st.integers(2, 300), elements=unit_floats),
       level=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_interval_contains_the_mean_and_matches_statsmodels(values: np.ndarray, level: float) -> None:
    mean, low, high = cell_interval(values, level)
    assert low <= mean + 1e-12 and mean <= high + 1e-12
    assert abs(mean - values.mean()) < 1e-12
    expected_low, expected_high = DescrStatsW(values).zconfint_mean(alpha=1 - level)
    assert abs(low - expected_low) < 1e-9 and abs(high - expected_high) < 1e-9


@settings(max_examples=40, deadline=None)
@given(values=arrays(np.float64, st.integers(2, 100), elements=unit_floats), repeats=st.integers(2, 20))
def test_interval_shrinks_with_n(values: np.ndarray, repeats: int) -> None:
    # the same values seen `repeats` times: same mean, (almost) the same spread, more samples -> narrower
    _, low, high = cell_interval(values)
    _, low_more, high_more = cell_interval(np.tile(values, repeats))
    width, width_more = high - low, high_more - low_more
    if width < 1e-12:  # constant values: zero width (to rounding) whatever n
        assert width_more < 1e-12
    else:
        assert width_more < width


finite = st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 4),
    d_feature=st.integers(1, 6),
    n_concepts=st.integers(2, 7),
    d_concept=st.integers(1, 6),
    iterations=st.integers(1, 4),
    data=st.data(),
)
def test_routing_rows_sum_to_one_for_any_finite_inputs(batch: int, d_feature: int, n_concepts: int, d_concept: int,
                                                      iterations: int, data: st.DataObject) -> None:
    f = data.draw(arrays(np.float32, (batch, 7, d_feature), elements=finite))
    p = data.draw(arrays(np.float32, (batch, 7), elements=st.floats(0, 1, width=32)))
    W = data.draw(arrays(np.float32, (7, d_feature, n_concepts, d_concept), elements=finite))
    _, r, _ = route(torch.from_numpy(f), torch.from_numpy(p), torch.from_numpy(W), iterations)
    assert r.shape == (batch, 7, n_concepts)
    assert torch.isfinite(r).all()
    assert (r >= 0).all()
    torch.testing.assert_close(r.sum(-1), torch.ones(batch, 7), rtol=0, atol=1e-5)
