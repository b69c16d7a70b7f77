#!/usr/bin/env bash
# Multi-GPU on one node: Lightning starts one process per GPU itself.
#   bash scripts/launch_ddp.sh 8 experiment=cifar10_glow
# Or with torchrun (Lightning detects the torchrun environment and does not spawn again):
#   torchrun --nproc_per_node=8 train.py experiment=cifar10_glow trainer=ddp trainer.devices=8
set -euo pipefail
gpus=${1:?usage: launch_ddp.sh <gpus> [overrides...]}; shift
exec python train.py trainer=ddp trainer.accelerator=gpu trainer.devices="$gpus" "$@"
