#!/usr/bin/env bash
# Multi-node DDP under SLURM: one task per GPU; Lightning reads SLURM's environment (SLURMEnvironment).
#   sbatch scripts/launch_slurm.sh experiment=cifar10_glow
# The batch size is per GPU (data.batch_size), so the global batch is nodes x gpus x data.batch_size.
#SBATCH --job-name=glow
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
export WANDB_MODE=${WANDB_MODE:-offline}
# every task gets the same run directory, so all ranks agree on where checkpoints go
run_dir="outputs/slurm/${SLURM_JOB_ID}"
srun .venv/bin/python train.py trainer=ddp trainer.accelerator=gpu \
  trainer.devices="${SLURM_NTASKS_PER_NODE}" trainer.num_nodes="${SLURM_JOB_NUM_NODES}" \
  hydra.run.dir="$run_dir" "$@"
