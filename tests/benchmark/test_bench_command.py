"""``bosbase-pubsub bench`` against a real server: short runs, their JSON, their refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..conftest import StartServer
from ..servers import ServerProcess, cli

FIELDS = {
    "mode", "url", "topic", "subscribers", "publishers", "rate", "payload_bytes",
    "duration_s", "due", "published", "acked", "acked_per_s", "deliveries", "expected_deliveries",
    "deliveries_per_s", "lost", "duplicates", "gaps", "errors", "first_error",
    "delivery_latency", "ack_latency", "timeline", "client",
}  # fmt: skip


def test_a_fanout_run_delivers_everything_and_writes_its_json_and_plot(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    out, png = tmp_path / "fanout.json", tmp_path / "fanout.png"
    # No token: the command signs up a throwaway account of its own.
    result = cli("bench", "--url", shared_server.url, "--subscribers", "20", "--rate", "200",
                 "--duration", "2", "--json", str(out), "--plot", str(png))  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert set(document) == FIELDS
    assert document["acked"] == document["published"] > 300
    assert document["published"] <= document["due"] == 400  # 200/s for 2 s
    assert document["client"]["cpu_percent"] > 0
    assert document["deliveries"] == document["expected_deliveries"] == document["acked"] * 20
    assert (document["lost"], document["duplicates"], document["gaps"]) == (0, 0, 0)
    assert document["errors"] == 0
    latency = document["delivery_latency"]
    assert latency["count"] == document["deliveries"]
    assert 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert sum(document["timeline"]["deliveries"]) == document["deliveries"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "deliveries/s" in result.stdout
    assert "lost" in result.stdout


def test_a_publish_run_counts_acked_publishes(
    shared_server: ServerProcess, superuser_token: str, tmp_path: Path
) -> None:
    out = tmp_path / "publish.json"
    result = cli("bench", "--url", shared_server.url, "--mode", "publish", "--publishers", "4",
                 "--duration", "1.5", "--token", superuser_token, "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["subscribers"] == 0
    assert document["acked"] == document["published"] > 0
    assert document["ack_latency"]["count"] == document["acked"]
    assert document["errors"] == 0


def test_refused_publishes_are_errors_and_a_failing_exit_status(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "refused.json"
    result = cli("bench", "--url", shared_server.url, "--mode", "publish", "--duration", "0.5",
                 "--token", "not-a-token", "--json", str(out))  # fmt: skip
    assert result.returncode == 3
    document = json.loads(out.read_text())
    assert document["acked"] == 0
    assert document["errors"] > 0
    assert document["first_error"] == "authentication required to publish"


def test_a_server_off_loopback_is_refused_unless_allowed() -> None:
    result = cli("bench", "--url", "http://192.0.2.10:8090", "--duration", "1")
    assert result.returncode == 1
    assert "not a loopback address" in result.stderr
    assert "--allow-remote" in result.stderr
    too_many = cli("bench", "--subscribers", "9999", "--publishers", "2")
    assert too_many.returncode == 2


def test_a_server_that_goes_away_ends_the_run_with_its_close_code(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    out = tmp_path / "gone.json"
    bench = subprocess.Popen(
        [sys.executable, "-m", "bosbase_pubsub.cli", "bench", "--url", server.url,
         "--subscribers", "5", "--rate", "100", "--duration", "120", "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert bench.stderr is not None
        # Off a terminal the progress line comes every 2 s: the first says it runs.
        for line in bench.stderr:
            if "running" in line:
                break
        server.stop()
        # Well before its 120 s: the connections are gone, nothing is left to wait for.
        _, errors = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 3, errors
    document = json.loads(out.read_text())
    assert document["acked"] > 0
    assert document["errors"] > 0
    assert "closed with 1001: the server is shutting down" in document["first_error"]
