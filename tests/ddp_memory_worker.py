"""Run by tests/test_memory.py: one rank of a 2-process CPU DDP step on a Glow in invertible mode.

    python tests/ddp_memory_worker.py <rank> <world size> <init file> <out dir>

Each rank builds the same model, takes its half of a fixed batch, and saves the DDP-averaged gradients.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_memory import _model  # noqa: E402


class NegativeLogProb(nn.Module):
    def __init__(self, glow):
        super().__init__()
        self.glow = glow

    def forward(self, x, cond):
        return -self.glow.log_prob(x, cond).mean()


if __name__ == "__main__":
    rank, world, init_file, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    model, x, cond = _model("invertible", conditional="image")  # ActNorm init before the group: no all-reduce
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    ddp = nn.parallel.DistributedDataParallel(NegativeLogProb(model))
    half = x.shape[0] // world
    ddp(x[rank * half:(rank + 1) * half], cond[rank * half:(rank + 1) * half]).backward()
    torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, out / f"grads_rank{rank}.pt")
    dist.destroy_process_group()
