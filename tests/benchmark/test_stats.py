"""The bench's counting, pure (no event loop, no server)."""

from __future__ import annotations

from bosbase_pubsub.benchmark.stats import Reservoir, Stream, Timeline


def test_percentiles_are_nearest_rank() -> None:
    latencies = Reservoir()
    for value in range(1, 101):  # 1..100 ms
        latencies.add(float(value))
    assert latencies.percentile(50) == 50.0
    assert latencies.percentile(90) == 90.0
    assert latencies.percentile(99) == 99.0
    assert latencies.percentile(100) == 100.0
    assert latencies.percentile(0) == 1.0
    assert latencies.summary()["max_ms"] == 100.0
    assert Reservoir().percentile(99) is None


def test_the_reservoir_keeps_a_bounded_sample_and_the_exact_count_and_maximum() -> None:
    latencies = Reservoir(capacity=100)
    for value in range(10_000):
        latencies.add(float(value))
    assert len(latencies.samples) == 100
    assert latencies.count == 10_000
    assert latencies.maximum == 9_999.0
    median = latencies.percentile(50)
    assert median is not None
    assert 2_000 < median < 8_000  # a uniform sample, not the first or last hundred


def test_a_stream_counts_duplicates_and_gaps() -> None:
    stream = Stream()
    assert [stream.add(n) for n in (0, 1, 1, 3, 2, 4)] == [True, True, False, True, False, True]
    assert (stream.received, stream.duplicates, stream.skipped) == (4, 2, 1)
    assert stream.lost(acked=5) == 1


def test_the_timeline_rate_is_over_the_last_full_slot() -> None:
    timeline = Timeline(step=0.5)
    for elapsed in (0.1, 0.2, 0.6, 0.7, 0.8):
        timeline.add(elapsed)
    assert timeline.rate(1.2) == 6.0  # 3 in the slot 0.5-1.0
    assert timeline.rate(0.3) == 0.0  # no full slot yet
