#!/usr/bin/env bash
# Set everything up, then build real model files (some booby-trapped with harmless
# payloads), scan them with `bastion scan`, and show the report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python scripts/demo.py "$@"
