"""Using the SDK loads only what it needs: never the server's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_ONLY = ["aiohttp", "uvloop", "jwt", "bcrypt", "asyncpg"]


def loaded_after(code: str) -> list[str]:
    """The modules of ``SERVER_ONLY`` and the SDK's own deps loaded after running ``code``."""
    probe = (
        "import sys, json\n"
        f"{code}\n"
        "names = ['aiohttp', 'uvloop', 'jwt', 'bcrypt', 'asyncpg', 'httpx', 'websockets',"
        " 'bosbase_pubsub.server']\n"
        "print(json.dumps([n for n in names if n in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_the_sdk_does_not_import_the_server_or_its_dependencies() -> None:
    loaded = loaded_after(
        "import bosbase_pubsub\n"
        "from bosbase_pubsub import BosBase, AsyncBosBase, AuthStore, BosBaseError\n"
        "BosBase('http://127.0.0.1:1').close()\n"
    )
    assert [name for name in loaded if name in SERVER_ONLY] == []
    assert "bosbase_pubsub.server" not in loaded
    assert {"httpx", "websockets"} <= set(loaded)


def test_the_sub_and_pub_commands_do_not_import_server_dependencies() -> None:
    loaded = loaded_after(
        "from bosbase_pubsub import cli\n"
        "cli.build_parser().parse_args(['pub', 'topic', '1'])\n"
        "import bosbase_pubsub.client._cli\n"
    )
    assert [name for name in loaded if name in SERVER_ONLY] == []


def test_importing_the_package_or_its_protocol_loads_no_sdk_dependency() -> None:
    loaded = loaded_after("import bosbase_pubsub, bosbase_pubsub.protocol")
    assert loaded == []
