#!/usr/bin/env bash
# Multi-GPU on one node: Lightning starts one process per GPU itself.
#   bash scripts/launch_ddp.sh 8 experiment=cifar10_glow
#   PYTHON=python3 bash scripts/launch_ddp.sh 8 ...      # another interpreter (default: the project's .venv)
# Or with torchrun (Lightning detects the torchrun environment and does not spawn again):
#   torchrun --nproc_per_node=8 train.py experiment=cifar10_glow trainer=ddp trainer.devices=8
set -euo pipefail
gpus=${1:?usage: launch_ddp.sh <gpus> [overrides...]}; shift
repo=$(cd "$(dirname "$0")/.." && pwd)
# the project's interpreter, as the Makefile uses it (.venv/bin/python), else python3; PYTHON overrides
default=python3; [ -x "$repo/.venv/bin/python" ] && default="$repo/.venv/bin/python"
exec "${PYTHON:-$default}" "$repo/train.py" trainer=ddp trainer.accelerator=gpu trainer.devices="$gpus" "$@"
