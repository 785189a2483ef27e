"""Latency percentiles in bounded memory (pure, no event loop)."""

from __future__ import annotations

import pytest

from bosbase_pubsub.benchmark.stats import LatencyHistogram, Timeline


def test_percentiles_are_within_one_percent_and_max_is_exact() -> None:
    histogram = LatencyHistogram()
    for millis in range(1, 1001):  # 1 ms .. 1000 ms
        histogram.record(millis / 1000)
    assert histogram.count == 1000
    for q, expected in ((50, 0.5), (90, 0.9), (99, 0.99)):
        assert histogram.percentile(q) == pytest.approx(expected, rel=0.01)
    assert histogram.percentile(100) == histogram.maximum == 1.0
    assert histogram.mean == pytest.approx(0.5005)
    summary = histogram.summary_ms()
    assert summary["max"] == 1000.0
    assert summary["p50"] == pytest.approx(500, rel=0.01)


def test_empty_and_merged_histograms() -> None:
    empty = LatencyHistogram()
    assert empty.percentile(99) == 0.0
    assert empty.summary_ms()["count"] == 0
    low, high = LatencyHistogram(), LatencyHistogram()
    for _ in range(99):
        low.record(0.001)
    high.record(2.0)
    low.merge(high)
    assert low.count == 100
    assert low.percentile(99) == pytest.approx(0.001, rel=0.01)
    assert low.percentile(100) == 2.0
    with pytest.raises(ValueError, match="percentile"):
        low.percentile(101)


def test_timeline_fills_the_seconds_in_between() -> None:
    timeline = Timeline(start=100.0)
    timeline.at(100.2).sent += 1
    timeline.at(103.7).delivered += 2
    assert [s["t"] for s in timeline.to_json()] == [0, 1, 2, 3]
    assert timeline.to_json()[3]["delivered"] == 2
