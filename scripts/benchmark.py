"""Speed and memory of training steps, for several model variants measured in ONE run (ratios are
what to quote: this machine is noisy).

    python scripts/benchmark.py                                  # the default MNIST model, each coupling
    python scripts/benchmark.py variants=permutation batch_size=64 steps=20
    python scripts/benchmark.py device=cuda precision=bf16 model.hidden_channels=512 image_shape=[3,32,32]

Each variant runs in its own subprocess (so peak memory is its own): a few warm-up steps, then
``steps`` timed optimiser steps (forward, GlowModule.bpd loss on uint8 images, backward, Adamax). Prints a Markdown table
and writes benchmark.json (steps/s, images/s, peak memory) into ``out`` (default outputs/benchmark).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from glow.module import GlowModule
from glow.quantize import preprocess

DEFAULTS = OmegaConf.create({
    "variants": "coupling",          # coupling | permutation | precision | parameterisation | none
    "image_shape": [1, 32, 32], "batch_size": 64, "steps": 10, "warmup": 3, "device": "cpu",
    "precision": "fp32", "threads": 0, "out": "outputs/benchmark",
    "model": {"levels": 3, "steps": 8, "hidden_channels": 64, "coupling": "affine", "permutation": "conv_lu"},
})
VARIANTS = {
    "coupling": [{"model.coupling": c} for c in ("additive", "affine", "spline")],
    "permutation": [{"model.permutation": p} for p in ("reverse", "shuffle", "conv", "conv_lu")],
    "precision": [{"precision": p} for p in ("fp32", "bf16")],
    # before issue 8 (no inner ActNorm, plain zero layers, per-position top), Glow's parameterisation,
    # Glow without inner ActNorm, and the default experiment's model (Glow with the tanh affine scale)
    "parameterisation": [{"model.inner_actnorm": False, "model.zero_logscale": False,
                          "model.learn_top_per_position": True}, {}, {"model.inner_actnorm": False},
                         {"model.affine_scale": "tanh"}],
    "none": [{}],
}


def measure(cfg) -> dict:
    """Runs in the child process: time `steps` optimiser steps of one variant."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    model_config = {"image_shape": list(cfg.image_shape), **OmegaConf.to_container(cfg.model)}
    module = GlowModule(model_config, lr=1e-4).to(device)  # the training module's own loss (bits/dim)
    model = module.model
    batch = (torch.randint(0, 256, (cfg.batch_size, *cfg.image_shape), dtype=torch.uint8, device=device),
             torch.zeros(cfg.batch_size, dtype=torch.long, device=device))
    model.initialize(preprocess(batch[0], module.n_bits))
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = module.bpd(batch, model)[0].mean()
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(cfg.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(cfg.steps):
        loss = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"steps_per_s": cfg.steps / seconds, "images_per_s": cfg.steps * cfg.batch_size / seconds,
            "peak_memory_mb": peak / 2 ** 20, "memory_kind": "cuda allocated" if device.type == "cuda" else "process RSS",
            "params": sum(p.numel() for p in model.parameters()), "final_loss": float(loss)}


def main() -> None:
    cli = OmegaConf.from_cli()
    if cli.get("_child"):
        print(json.dumps(measure(OmegaConf.merge(DEFAULTS, cli))))
        return
    cfg = OmegaConf.merge(DEFAULTS, cli)
    if cfg.variants not in VARIANTS:
        sys.exit(f"config error: variants={cfg.variants!r} is not allowed: use one of {', '.join(VARIANTS)}")
    rows = []
    for variant in VARIANTS[cfg.variants]:
        args = [f"{k}={v}" for k, v in OmegaConf.to_container(cli).items() if k != "variants"]
        args += [f"{k}={v}" for k, v in variant.items()] + ["_child=true"]
        proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"variant {variant} failed:\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"variant": ", ".join(f"{k}={v}" for k, v in variant.items()) or "default", **result})
        print(f"{rows[-1]['variant']}: {result['steps_per_s']:.2f} steps/s, {result['peak_memory_mb']:.0f} MB", flush=True)
    base = rows[0]["steps_per_s"]
    print(f"\n| variant | steps/s | images/s | vs first | peak memory (MB, {rows[0]['memory_kind']}) | params |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['steps_per_s']:.2f} | {r['images_per_s']:.0f} | {r['steps_per_s'] / base:.2f}x "
              f"| {r['peak_memory_mb']:.0f} | {r['params']:,} |")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps({"config": OmegaConf.to_container(cfg), "rows": rows}, indent=2))
    print(f"\nwritten to {out / 'benchmark.json'}")


if __name__ == "__main__":
    main()
