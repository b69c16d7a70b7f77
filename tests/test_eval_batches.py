"""An evaluation figure does not depend on how the split is cut into batches: every image's
dequantisation noise and (c-Glow) hole come from its own index in the split."""

from __future__ import annotations

import torch

from glow.module import DensityModule

CGLOW = {"image_shape": [1, 8, 8], "levels": 2, "steps": 2, "hidden_channels": 8, "conditional": "image",
         "cond_channels": 4}
MASKS = {"mix": {"center": 1.0, "boxes": 1.0, "half": 1.0, "pixels": 1.0}}


def per_image_bpd(module: DensityModule, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    labels = torch.zeros(images.shape[0], dtype=torch.long)
    with torch.no_grad():
        return torch.cat([module.evaluate((x, y), i)["bpd"]
                          for i, (x, y) in enumerate(zip(images.split(batch_size), labels.split(batch_size)))])


def test_cglow_figures_are_the_same_for_every_eval_batch_size():
    torch.manual_seed(0)
    module = DensityModule(CGLOW, masks=MASKS).eval()
    images = torch.randint(0, 256, (11, 1, 8, 8), dtype=torch.uint8)
    whole = per_image_bpd(module, images, 11)
    for batch_size in (1, 3, 4):
        assert torch.allclose(per_image_bpd(module, images, batch_size), whole, rtol=0, atol=1e-5), batch_size
    # the holes really are drawn (several kinds), and they differ between images
    holes = [module.eval_inputs((images[i:i + 1], torch.zeros(1, dtype=torch.long)), 0, i).hole for i in range(11)]
    assert len({tuple(h.flatten().tolist()) for h in holes}) > 3


def test_an_image_keeps_its_noise_at_any_position_in_a_batch_but_not_at_another_index():
    module = DensityModule({**CGLOW, "conditional": None})
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    labels = torch.zeros(4, dtype=torch.long)
    together = module.eval_inputs((images, labels), 0, 0).x
    alone = module.eval_inputs((images[2:3], labels[2:3]), 7, 2).x
    assert torch.equal(together[2:3], alone)
    shifted = module.eval_inputs((images[2:3], labels[2:3]), 0, 3).x  # another index: other noise
    assert not torch.equal(shifted, alone)
