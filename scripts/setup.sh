#!/usr/bin/env bash
# Create .venv/ and install Bastion with its locked, hash-checked dependencies.
# Usage: scripts/setup.sh            (development: runtime + test/benchmark tools)
#        scripts/setup.sh --runtime  (only what `bastion` needs to run)
set -euo pipefail
cd "$(dirname "$0")/.."

lock=requirements/dev.txt
[ "${1:-}" = "--runtime" ] && lock=requirements/runtime.txt

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python=$candidate
      break
    fi
  done
fi
[ -n "$python" ] || { echo "error: Python 3.11 or newer is needed" >&2; exit 2; }

[ -x .venv/bin/python ] || "$python" -m venv .venv

# Reinstall only when the lock file or the project metadata changed.
stamp=".venv/.installed-$(cat "$lock" pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setting up .venv from $lock (hash-checked)..." >&2
  # The lock is complete (pip-compile lists every transitive dependency with its hashes), so it
  # is installed as it stands, without resolving: a resolver would ask the index about extras
  # such as pydantic[email] and fail, or drift, as new releases appear. The interpreter's own
  # bundled pip does this the same today and in a year; `pip check` then proves nothing is missing.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$lock"
  .venv/bin/python -m pip check
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# Byte-compile the editable source as pip does for installed packages: start-up time
# counts in CI, and PYTHONDONTWRITEBYTECODE would otherwise recompile it on every run.
.venv/bin/python -m compileall -q -j 0 src
