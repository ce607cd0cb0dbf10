#!/usr/bin/env bash
# Idempotent set-up: system packages (host gcc, Arm GNU toolchain, newlib, QEMU) and a
# pinned virtual environment at .venv in the repo root. Safe to run again and again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

need_apt=0
for tool in gcc make cmake arm-none-eabi-gcc qemu-system-arm; do
  command -v "$tool" >/dev/null 2>&1 || need_apt=1
done
if command -v arm-none-eabi-gcc >/dev/null 2>&1; then
  libc="$(arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -print-file-name=libc.a)"
  [ -f "$libc" ] || need_apt=1
fi
if [ "$need_apt" = 1 ]; then
  echo "[setup] installing system packages (gcc, make, cmake, gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm)"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    gcc make cmake python3-venv gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm >/dev/null
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
stamp=".venv/.mcugen-setup-stamp"
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] creating .venv with pinned dependencies (requirements.lock)"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # --no-deps: the lock file is complete. It deliberately leaves out keras and tf-keras,
  # which the TensorFlow wheel declares but mcugen never uses (no Keras anywhere).
  .venv/bin/python -m pip install -q --no-deps -r requirements.lock
  .venv/bin/python -m pip uninstall -q -y keras tf-keras >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
