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

# Reinstall only when a lock file or the project metadata changed.
build=requirements/build.txt
stamp=".venv/.installed-$(cat "$lock" "$build" pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # Whatever pip the venv came with does the install (the interpreter's bundled one on a new
  # machine: nothing here upgrades it first); .ci/run and scripts/test.sh print which it was.
  pip_used=$(.venv/bin/python -m pip --version --disable-pip-version-check | cut -d' ' -f1,2)
  echo "setting up .venv from $lock (hash-checked) with $pip_used..." >&2
  # The lock is complete (pip-compile lists every transitive dependency with its hashes), so it
  # is installed as it stands, without resolving: a resolver would ask the index about extras
  # such as pydantic[email] and fail, or drift, as new releases appear. The interpreter's own
  # bundled pip does this the same today and in a year; `pip check` then proves nothing is missing.
  # (The dev lock pins pip itself, for pip-tools: it is installed from the lock like the rest.)
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$lock"
  # The build backend is locked too: the bundled setuptools (65.5 with Python 3.11) cannot build
  # Bastion, and --no-build-isolation keeps pip from fetching an unpinned one.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$build"
  .venv/bin/python -m pip check
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  rm -f .venv/.installed-*
  echo "$pip_used, $(.venv/bin/python -V 2>&1), from $lock" > "$stamp"
fi
# Byte-compile the editable source as pip does for installed packages: start-up time
# counts in CI, and PYTHONDONTWRITEBYTECODE would otherwise recompile it on every run.
.venv/bin/python -m compileall -q -j 0 src
