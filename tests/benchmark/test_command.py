"""``bosbase-pubsub bench`` as a user runs it: a real process against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..client.test_imports import SERVER_ONLY, loaded_after
from ..conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, StartServer
from ..servers import ServerProcess, cli

SUMMARY_FIELDS = {
    "mode", "workload", "sent", "acked", "delivered", "expected_deliveries", "lost",
    "duplicates", "errors", "error_messages", "acked_publishes_per_s", "deliveries_per_s",
    "ack_latency_ms", "delivery_latency_ms", "client_cpu_percent", "timeline",
    "latency_histogram_ms", "drained", "window_s",
}  # fmt: skip
LATENCY_FIELDS = {"count", "mean", "p50", "p90", "p99", "max"}


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOSBASE_PUBSUB_")}
    return subprocess.run(
        [sys.executable, "-m", "bosbase_pubsub.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def result_of(run: subprocess.CompletedProcess[str], path: Path) -> dict[str, Any]:
    assert run.returncode == 0, run.stderr
    result: dict[str, Any] = json.loads(path.read_text())
    assert set(result) >= SUMMARY_FIELDS
    assert set(result["ack_latency_ms"]) == LATENCY_FIELDS
    assert result["lost"] == 0
    assert result["errors"] == 0, result["error_messages"]
    assert result["drained"] is True
    return result


def test_fanout_delivers_every_acked_message_to_every_subscriber(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    out, plot = tmp_path / "fanout.json", tmp_path / "fanout.png"
    run = bench(
        "fanout", "--url", shared_server.url, "--email", SUPERUSER_EMAIL,
        "--password", SUPERUSER_PASSWORD, "--collection", "_superusers",
        "--subscribers", "3", "--publishers", "2", "--rate", "200", "--duration", "2",
        "--json", str(out), "--plot", str(plot),
    )  # fmt: skip
    result = result_of(run, out)
    assert result["mode"] == "fanout"
    assert result["acked"] > 0
    assert result["delivered"] == result["expected_deliveries"] == result["acked"] * 3
    assert result["deliveries_per_s"] > 0
    assert result["delivery_latency_ms"]["count"] == result["delivered"]
    assert sum(second["delivered"] for second in result["timeline"]) == result["delivered"]
    assert result["account"] == f"{SUPERUSER_EMAIL} (_superusers)"
    # The table on stdout, the live line on stderr (not a terminal: plain lines).
    assert "deliveries/s" in run.stdout
    assert "lost" in run.stdout
    assert "delivered" in run.stderr
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_publish_mode_signs_up_an_account_of_its_own(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    out = tmp_path / "publish.json"
    run = bench(
        "publish", "--url", server.url, "--duration", "1.5", "--count", "3000",
        "--json", str(out), "--quiet",
    )  # fmt: skip
    result = result_of(run, out)
    assert result["workload"]["subscribers"] == 0
    assert 0 < result["acked"] == result["sent"] <= 3000
    assert result["acked_publishes_per_s"] > 0
    assert result["ack_latency_ms"]["count"] == result["acked"]
    assert result["account"].endswith("(users, created for this run)")
    assert run.stderr.count("\r") == 0  # --quiet: no progress line


def test_a_remote_server_is_refused_without_allow_remote(tmp_path: Path) -> None:
    out = tmp_path / "remote.json"
    # 192.0.2.1 is a documentation address: nothing would answer there.
    run = bench("--url", "http://192.0.2.1:8090", "--setup-timeout", "1", "--json", str(out))
    assert run.returncode == 2
    assert "192.0.2.1 is not a loopback address" in run.stderr
    assert "--allow-remote" in run.stderr
    assert not out.exists()


def test_bench_needs_none_of_the_server_dependencies() -> None:
    loaded = loaded_after(
        "from bosbase_pubsub import cli\n"
        "cli.build_parser().parse_args(['bench', 'publish'])\n"
        "from bosbase_pubsub.benchmark import command, progress, report, runner\n"
        "assert 'matplotlib' not in sys.modules  # only a --plot loads it\n"
    )
    assert [name for name in loaded if name in SERVER_ONLY] == []


def test_the_cli_reference_lists_every_bench_flag() -> None:
    reference = (Path(__file__).parents[2] / "docs/reference/cli.md").read_text()
    flags = set(re.findall(r"(--[a-z][a-z-]+)", cli("bench", "--help").stdout)) - {"--help"}
    assert flags  # the help was read
    assert {flag for flag in flags if f"`{flag}" not in reference} == set()
