"""Drift of model.memory=invertible: max |x_recomputed - x| over every flow step's input, with the inputs
recomputed from each level's output by repeated inversion (what InvertibleBlock's backward does), in
fp32 and under bf16 autocast.

    python scripts/inversion_drift.py ckpt_path=<run>/checkpoints/last.ckpt data=mnist      # or data=<image folder>
    python scripts/inversion_drift.py steps=32 hidden_channels=64      # an untrained (ActNorm-initialised) Glow

Images: ``batch_size`` test images of ``data`` (mnist, cifar10, or an image folder under the data
directory, GLOW_DATA_DIR), else random uint8 images. Prints one row per level and precision; ``json=PATH`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from glow.flows.memory import inversion_drift
from glow.model import Glow
from glow.quantize import preprocess
from glow.sampling.load import load

DEFAULTS = OmegaConf.create({"ckpt_path": None, "data": None, "batch_size": 16, "json": None, "seed": 0,
                             "image_shape": [3, 32, 32], "levels": 3, "steps": 32, "hidden_channels": 64})


def images(cfg, shape) -> torch.Tensor:
    if cfg.data is None:
        return torch.randint(0, 256, (cfg.batch_size, *shape), dtype=torch.uint8)
    from glow.data import ImageDataModule
    path = {"path": cfg.data} if cfg.data not in ("mnist", "cifar10") else {}
    data = ImageDataModule(name=cfg.data if not path else "imagefolder", **path, batch_size=cfg.batch_size,
                           image_size=shape[-1], num_workers=0, download=False, fallback=False)
    data.setup("test")
    return next(iter(data.test_dataloader()))[0][:cfg.batch_size]


def main() -> None:
    cfg = OmegaConf.merge(DEFAULTS, OmegaConf.from_cli())
    torch.manual_seed(cfg.seed)
    if cfg.ckpt_path:
        model = load(cfg.ckpt_path)
    else:
        model = Glow(tuple(cfg.image_shape), levels=cfg.levels, steps=cfg.steps, hidden_channels=cfg.hidden_channels)
    x = preprocess(images(cfg, model.image_shape), model.n_bits)
    if not model.is_initialized:
        model.initialize(x)
    model.eval()
    level_inputs = {}
    hooks = [level.register_forward_pre_hook(lambda m, args, i=i: level_inputs.setdefault(i, args))
             for i, level in enumerate(model.levels)]
    with torch.no_grad():
        model.log_prob(x)
    for h in hooks:
        h.remove()
    rows = []
    for precision in ("fp32", "bf16"):
        for i, level in enumerate(model.levels):
            h, cond = level_inputs[i]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                drift = inversion_drift(level, h, cond)
            rows.append({"precision": precision, "level": i, "flow_layers": len(level.layers), "max_drift": drift,
                         "max_abs_input": float(h.abs().max())})
    print("| precision | level | layers | max abs drift | max abs input |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['level']} | {r['flow_layers']} | {r['max_drift']:.2e} | {r['max_abs_input']:.2f} |")
    errors = gradient_errors(model, x)
    print("\nrelative L2 error of all parameter gradients (loss: mean -log p):")
    for name, value in errors.items():
        print(f"  {name}: {value:.2e}")
    if cfg.json:
        Path(cfg.json).write_text(json.dumps({"config": OmegaConf.to_container(cfg), "rows": rows,
                                              "gradient_errors": errors}, indent=2))


def gradient_errors(model: Glow, x: torch.Tensor) -> dict[str, float]:
    """What the drift does to the gradient: invertible vs plain autograd in each precision, next to
    what bf16 itself changes (plain bf16 vs plain fp32)."""
    model.train()
    grads = {}
    for memory in ("none", "invertible"):
        for level in model.levels:
            level.memory = memory
        for precision in ("fp32", "bf16"):
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = -model.log_prob(x).mean()
            loss.backward()
            grads[memory, precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    rel = lambda a, b: float((grads[a] - grads[b]).norm() / grads[b].norm())  # noqa: E731
    return {"invertible vs none, fp32": rel(("invertible", "fp32"), ("none", "fp32")),
            "invertible vs none, bf16": rel(("invertible", "bf16"), ("none", "bf16")),
            "none bf16 vs none fp32 (bf16 itself)": rel(("none", "bf16"), ("none", "fp32")),
            "invertible bf16 vs none fp32": rel(("invertible", "bf16"), ("none", "fp32"))}


if __name__ == "__main__":
    main()
