"""Window geometry and the watermark: boundaries, negative and large times, hopping slices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtstream.errors import ConfigError
from crdtstream.window.watermark import Watermark
from crdtstream.window.windows import TIMESTAMP_MS_LIMIT, Hopping, Tumbling

TIMES = st.integers(-TIMESTAMP_MS_LIMIT + 1, TIMESTAMP_MS_LIMIT - 1)


def test_boundaries_are_start_inclusive_end_exclusive() -> None:
    windows = Tumbling(1_000)
    assert windows.windows_of(0) == [(0, 1_000)]
    assert windows.windows_of(999) == [(0, 1_000)]
    assert windows.windows_of(1_000) == [(1_000, 2_000)]


def test_negative_times_floor_into_the_previous_window() -> None:
    windows = Tumbling(1_000)
    assert windows.windows_of(-1) == [(-1_000, 0)]
    assert windows.windows_of(-1_000) == [(-1_000, 0)]
    assert windows.windows_of(-1_001) == [(-2_000, -1_000)]


@given(TIMES, st.sampled_from([(1_000, 1_000), (1_000, 250), (60_000, 10_000), (7, 1)]))
def test_every_time_lies_in_exactly_its_windows(timestamp_ms: int, shape: tuple[int, int]) -> None:
    size_ms, slide_ms = shape
    windows = Hopping(size_ms, slide_ms)
    found = windows.windows_of(timestamp_ms)
    assert len(found) == size_ms // slide_ms
    for start, end in found:
        assert start <= timestamp_ms < end
        assert start % slide_ms == 0
        assert end - start == size_ms
    vectorised = windows.slice_starts(np.array([timestamp_ms], dtype=np.int64))
    assert int(vectorised[0]) == windows.slice_start(timestamp_ms)


@given(st.integers(-(10**12), 10**12))
def test_a_hopping_window_is_the_union_of_its_slices(start_slices: int) -> None:
    windows = Hopping(1_000, 250)
    start = start_slices * 250
    slices = windows.slices_of_window(start)
    assert slices == [start, start + 250, start + 500, start + 750]
    for slice_start in slices:
        assert start in windows.windows_of_slice(slice_start)


def test_size_must_be_a_multiple_of_the_slide() -> None:
    with pytest.raises(ConfigError, match="slide_ms"):
        Hopping(1_000, 300)


def test_watermark_follows_events_and_the_idle_clock() -> None:
    watermark = Watermark(allowed_lateness_ms=500)
    before_any_event = watermark.watermark_ms  # (asserting on the property would narrow it)
    assert before_any_event is None
    assert not watermark.is_closed(-(10**9))
    watermark.advance(10_000)
    assert watermark.watermark_ms == 9_500
    assert not watermark.advance(9_000), "time never goes back"
    assert watermark.watermark_ms == 9_500
    assert watermark.is_closed(9_500)
    assert not watermark.is_closed(9_501)
