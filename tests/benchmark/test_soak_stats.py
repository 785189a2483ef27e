"""bench.soak's RSS figures, pure (no server, no load generator)."""

from __future__ import annotations

import pytest
from bench.common import source_addresses
from bench.soak import rss_summary, slope_per_minute


def test_the_slope_is_least_squares_in_mib_per_minute() -> None:
    samples = [(float(t), 100.0 + 0.5 * t / 60) for t in range(0, 600, 5)]
    slope = slope_per_minute(samples)
    assert slope == pytest.approx(0.5)
    assert slope_per_minute([(0.0, 1.0)]) is None
    assert slope_per_minute([(3.0, 1.0), (3.0, 2.0)]) is None
    flat_with_noise = [(float(t), 80.0 + (1.0 if t % 10 else -1.0)) for t in range(0, 600, 5)]
    flat = slope_per_minute(flat_with_noise)
    assert flat is not None
    assert abs(flat) < 0.05


def test_the_summary_counts_the_slope_after_the_warm_up_only() -> None:
    samples = [(0.0, 50.0), (30.0, 70.0), (60.0, 80.0), (120.0, 80.0), (180.0, 81.0)]
    summary = rss_summary(samples, warmup=60.0)
    assert summary["start_mib"] == 50.0
    assert summary["warm_mib"] == 80.0
    assert summary["end_mib"] == 81.0
    assert summary["max_mib"] == 81.0
    assert summary["growth_after_warmup_mib"] == 1.0
    assert summary["slope_mib_per_min"] == pytest.approx(0.5)
    # Second half: from 90 s on, (120, 80) and (180, 81).
    assert summary["slope_last_half_mib_per_min"] == pytest.approx(1.0)
    assert rss_summary([], warmup=60.0)["end_mib"] is None
    # A run shorter than its warm-up: the last sample stands for "after the warm-up".
    short = rss_summary([(0.0, 50.0), (10.0, 60.0)], warmup=60.0)
    assert short["warm_mib"] == 60.0
    assert short["slope_mib_per_min"] is None


def test_connections_are_spread_under_the_per_address_limit() -> None:
    assert source_addresses(1) == 1
    assert source_addresses(8000) == 1
    assert source_addresses(8001) == 2
    assert source_addresses(50_100) == 7
