#!/usr/bin/env bash
# Quick start, command 1: set up (idempotent), then run the main job: build MobileNet v2
# alpha 0.35 96x96, quantize to int8, generate C, compile and run it, compare bit for bit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
exec .venv/bin/mcugen demo -o out/demo --force "$@"
