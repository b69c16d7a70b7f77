"""Distributed samplers: unpadded shards for evaluation, step-addressed shards for training."""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import Sampler
from torch.utils.data.distributed import DistributedSampler

class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a data set, in order and unpadded.

    Every index lands on exactly one rank, so a metric summed over ranks counts each image once.
    (``DistributedSampler`` pads the shards to equal length by repeating images.) Shards may
    differ in length by one batch, so reduce sums and counts at epoch end, not per step.
    """

    def __init__(self, data_source: Sized, rank: int, world_size: int):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not allowed for world_size={world_size}: "
                             f"use 0 <= rank < world_size")
        self.num_items, self.rank, self.world_size = len(data_source), rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_items, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.world_size))


class ResumableSampler(DistributedSampler):
    """Shuffled, drop-last shards (as DistributedSampler) whose position is the global step.

    Every data epoch has exactly ``batches_per_epoch`` steps, so step ``s`` is batch
    ``s % batches_per_epoch`` of data epoch ``s // batches_per_epoch`` (shuffled by seed + epoch).
    Each ``iter()`` yields the rest of the current data epoch and moves on, so a run resumed at any
    step (``start_at``) sees exactly the batches an uninterrupted run would. Lightning's own epoch
    counter is not used (``set_epoch`` is a no-op): after a restore it can be off by one.
    """

    def __init__(self, dataset: Sized, world_size: int, rank: int, seed: int, batch_size: int):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.next_step = 0

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.num_samples // self.batch_size)

    def start_at(self, global_step: int) -> None:
        self.next_step = global_step

    def set_epoch(self, epoch: int) -> None:  # the position comes from next_step instead
        pass

    def __iter__(self) -> Iterator[int]:
        data_epoch, skip = divmod(self.next_step, self.batches_per_epoch)
        self.epoch = data_epoch
        indices = list(super().__iter__())[skip * self.batch_size: self.batches_per_epoch * self.batch_size]
        self.next_step = (data_epoch + 1) * self.batches_per_epoch
        return iter(indices)
