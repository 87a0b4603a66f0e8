#!/usr/bin/env bash
# Set up (idempotent) and run the main job: the ROS demo (camera -> node -> "segment the red
# cup" -> overlay PNG). Extra arguments go to `segcap demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/segcap demo "$@"
