#!/usr/bin/env bash
# Quick start, command 2: set up (idempotent), then run the whole test suite.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 -q "$@" tests
