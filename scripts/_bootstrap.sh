# Sourced by the other scripts: make sure uv is there, then sync .venv from uv.lock.
# Needs only python3 (3.10+) with venv; everything else comes from the lock file.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UV_VERSION="0.13.8"
if command -v uv >/dev/null 2>&1; then
  UV="$(command -v uv)"
else
  # A private tools venv, so that nothing is installed into the system Python.
  if [ ! -x .tools/bin/uv ]; then
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
  fi
  UV="$ROOT/.tools/bin/uv"
fi
"$UV" sync --locked --quiet
