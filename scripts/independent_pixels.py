"""The best bits/dim any model with independent pixels can reach on a data set's test split: each pixel's
8-bit histogram over the training split (add-one smoothed), charged on the test images.

    python scripts/independent_pixels.py data.image_size=null             # MNIST 28x28 (1.6899 bits/dim)
    python scripts/independent_pixels.py data=imagefolder data.path=cifar10-subset

Why it exists: a channel-autoregressive conv flow on 1-channel MNIST has no channel to condition on, so
it models pixels independently (up to what its per-pixel transforms share); this bound is what such a
model could reach at best, against which the flattened MAF's test bits/dim is compared (docs/families.md, "MAF,
IAF and distillation"). A discrete histogram is exact for 8-bit data, so it is a fair (generous) bound
for dequantised continuous models too.
"""

from __future__ import annotations

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig


def independent_pixel_bpd(train: torch.Tensor, test: torch.Tensor) -> float:
    """uint8 [N, C, H, W] train and test -> test bits/dim under per-pixel smoothed train histograms."""
    train, test = train.flatten(1).long(), test.flatten(1).long()
    counts = torch.ones(train.shape[1], 256, dtype=torch.float64)  # add-one smoothing
    counts.scatter_add_(1, train.T.contiguous(), torch.ones_like(train.T, dtype=torch.float64))
    log2_p = torch.log2(counts / counts.sum(1, keepdim=True))
    return float(-log2_p.gather(1, test.T.contiguous()).mean())


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup()
    stack = lambda ds: torch.stack([ds[i][0] for i in range(len(ds))])  # noqa: E731
    bpd = independent_pixel_bpd(stack(dm.train_set), stack(dm.test_set))
    print(f"{cfg.data.name} {tuple(dm.image_shape)}: independent-pixel bound {bpd:.4f} bits/dim "
          f"({len(dm.train_set)} train, {len(dm.test_set)} test images)")


if __name__ == "__main__":
    main()
