#!/usr/bin/env bash
# Set everything up, then run the whole test suite: lint, types, security lint, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Which pip set this venv up (the CI log proves the bundled one can): read from setup's stamp.
echo "== venv set up by $(cat .venv/.installed-* 2>/dev/null || echo 'an unknown pip (no stamp)')" >&2

echo "== ruff" >&2
.venv/bin/ruff check src tests benchmarks scripts
echo "== mypy --strict src" >&2
.venv/bin/mypy src
echo "== bandit" >&2
.venv/bin/bandit -q -c pyproject.toml -r src
echo "== pytest" >&2
.venv/bin/python -m pytest -n 2 -p no:cacheprovider "$@"
