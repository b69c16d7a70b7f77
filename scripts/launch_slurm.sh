#!/usr/bin/env bash
# Multi-node DDP under SLURM: one task per GPU; Lightning reads SLURM's environment (SLURMEnvironment).
#   sbatch scripts/launch_slurm.sh experiment=cifar10_glow
# The batch size is per GPU (data.batch_size), so the global batch is nodes x gpus x data.batch_size.
# Pre-emption: 90 s before the time limit (or when the job is pre-empted) SLURM sends SIGUSR1; train.py
# writes a resumable last.ckpt and exits 138, and the job is requeued. The same script starts and
# resumes: ckpt_path=auto resumes the run directory's last.ckpt when there is one, else starts, and a
# resumed run reuses the run's saved config with these overrides on top.
#SBATCH --job-name=glow
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=USR1@90
#SBATCH --requeue
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
export WANDB_MODE=${WANDB_MODE:-offline}
default=python3; [ -x .venv/bin/python ] && default=.venv/bin/python   # the project's interpreter (Makefile)
PYTHON=${PYTHON:-$default}
# every task, and every requeue of the job, gets the same run directory (the job id survives a requeue)
run_dir="outputs/slurm/${SLURM_JOB_ID}"
# only task 0 keeps Hydra's copy of the config (.hydra/); the others would race to rewrite it
status=0
srun bash -c 'extra=(); [ "${SLURM_PROCID}" = 0 ] || extra=(hydra.output_subdir=null)
  exec "$0" train.py "$@" "${extra[@]}"' "$PYTHON" trainer=ddp trainer.accelerator=gpu \
  trainer.devices="${SLURM_NTASKS_PER_NODE}" trainer.num_nodes="${SLURM_JOB_NUM_NODES}" \
  hydra.run.dir="$run_dir" ckpt_path=auto "$@" || status=$?
# 138 / 143: stopped by SIGUSR1 / SIGTERM with a resumable last.ckpt (train.py's handler replaces
# Lightning's own requeue): put the job back in the queue; the next start resumes it
if [ "$status" -eq 138 ] || [ "$status" -eq 143 ]; then
  scontrol requeue "${SLURM_JOB_ID}"
fi
exit "$status"
