"""The README's quick start and ``examples/`` work as written, against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import StartServer
from ..servers import ServerProcess, cli

ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8090"


@pytest.fixture
def server_with_ada(start_server: StartServer, tmp_path: Path) -> ServerProcess:
    """A server with the account the examples sign in with."""
    folder = tmp_path / "pb_data_examples"
    server = start_server(data_dir=folder)
    result = cli("user", "create", "ada@example.com", "secret-password", "--dir", str(folder))
    assert result.returncode == 0, result.stderr
    return server


def run_python(code_or_path: str | Path, server: ServerProcess) -> str:
    args = [str(code_or_path)] if isinstance(code_or_path, Path) else ["-c", code_or_path]
    env = {**os.environ, "BOSBASE_PUBSUB_URL": server.url}
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def readme_quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python SDK", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README's Python SDK section has no python block"
    return match.group(1)


def test_the_readme_quick_start_runs_as_written(server_with_ada: ServerProcess) -> None:
    code = readme_quick_start()
    assert README_URL in code
    out = run_python(code.replace(README_URL, server_with_ada.url), server_with_ada)
    message, ack = out.splitlines()
    assert message == "chat/general {'text': 'Hello team!'}"
    message_id, created = ack.split(" ", 1)
    assert re.fullmatch(r"[a-z0-9]+", message_id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z", created)


def test_the_examples_run(server_with_ada: ServerProcess) -> None:
    out = run_python(ROOT / "examples" / "quickstart.py", server_with_ada)
    assert out.splitlines()[0] == "chat/general {'text': 'Hello team!'}"
    out = run_python(ROOT / "examples" / "typed_usage.py", server_with_ada)
    assert "1 message(s) with threads" in out
    assert "1 message(s) with asyncio" in out
