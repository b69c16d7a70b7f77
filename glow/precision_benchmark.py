"""``scripts/benchmark.py suite=precision``: fp32 against bf16-mixed training steps of one Glow config, in ONE
process with the steps interleaved (fp32, bf16, fp32, ...), so both see the same machine state and their
ratio is what to quote. Each precision's rate is also given as a fraction of the same dtype's large-GEMM
rate, measured in the same process right after the steps. Sampling (256 images at T = 0.7) is timed the
same way (batches alternating), and ``reconstruction_error`` is max |x - inverse(forward(x))| of a batch in that precision:
what bf16 costs the flow's exactness.

    python scripts/benchmark.py suite=precision json=precision.json
"""

from __future__ import annotations

import statistics
import time

import torch

from glow.model import Glow
from glow.quantize import bits_per_dim, preprocess

PRECISIONS = ("fp32", "bf16")


def _step_fn(model: Glow, images: torch.Tensor, precision: str):
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-4)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = bits_per_dim(model.log_prob(preprocess(images)), model.num_dims).mean()
        loss.backward()
        optimizer.step()
        return float(loss)
    return step


def measure_precisions(cfg, build, model_flops, gemm_tflops) -> list[dict]:
    """One row per precision of the config ``cfg`` (benchmark.py's DEFAULTS merged with the row), the
    steps interleaved: ``warmup`` untimed rounds, then ``iters`` timed rounds of one step each."""
    model, images = build(cfg)
    twin = Glow(tuple(cfg.image_shape), **{k: v for k, v in dict(cfg.model).items()}, channels_last=cfg.channels_last)
    twin.load_state_dict(model.state_dict())  # the same weights: both precisions do the same work
    steps = {"fp32": _step_fn(model, images, "fp32"), "bf16": _step_fn(twin.to(images.device), images, "bf16")}
    for _ in range(cfg.warmup):
        for precision in PRECISIONS:
            steps[precision]()
    times = {p: [] for p in PRECISIONS}
    losses = {}
    for _ in range(cfg.iters):
        for precision in PRECISIONS:
            start = time.perf_counter()
            losses[precision] = steps[precision]()
            times[precision].append(time.perf_counter() - start)
    sampling, reconstruction = _sampling_rates(model, twin, images, cfg), {}
    for p, net in (("fp32", model), ("bf16", twin)):
        reconstruction[p] = _reconstruction_error(net, images, p)
    flops = {p: model_flops(_with(cfg, precision=p)) for p in PRECISIONS}
    gemm = {"fp32": gemm_tflops(images.device, torch.float32), "bf16": gemm_tflops(images.device, torch.bfloat16)}
    out = []
    for p in PRECISIONS:
        step_s = statistics.median(times[p])
        tflops = flops[p] / step_s / 1e12
        out.append({**dict(cfg.model), "batch_size": cfg.batch_size, "precision": p, "compile": cfg.compile,
                    "channels_last": cfg.channels_last, "device": cfg.device, "threads": torch.get_num_threads(),
                    "step_s": step_s, "images_per_s": cfg.batch_size / step_s, "tflops": tflops,
                    "step_gflop": flops[p] / 1e9, "gemm_tflops": gemm[p], "of_gemm": tflops / gemm[p],
                    "interleaved": True, "sampling_images_per_s": sampling[p],
                    "reconstruction_error": reconstruction[p], "step_s_runs": [round(t, 4) for t in times[p]], "final_loss": losses[p]})
    out[1]["bf16_over_fp32"] = out[1]["images_per_s"] / out[0]["images_per_s"]
    return out


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


SAMPLING_BATCH, SAMPLING_TEMPERATURE = 256, 0.7


@torch.no_grad()
def _sampling_rates(model: Glow, twin: Glow, images: torch.Tensor, cfg) -> dict[str, float]:
    """Images per second of model.sample(256, T=0.7), the precisions' batches alternating."""
    nets = {"fp32": model.eval(), "bf16": twin.eval()}
    seconds = {p: 0.0 for p in PRECISIONS}
    for round_ in range(1 + cfg.sample_batches):  # round 0 warms up
        for p in PRECISIONS:
            start = time.perf_counter()
            with _autocast(images.device, p):
                nets[p].sample(SAMPLING_BATCH, temperature=SAMPLING_TEMPERATURE)
            seconds[p] += (time.perf_counter() - start) * (round_ > 0)
    return {p: cfg.sample_batches * SAMPLING_BATCH / seconds[p] for p in PRECISIONS}


@torch.no_grad()
def _reconstruction_error(model: Glow, images: torch.Tensor, precision: str) -> float:
    x = preprocess(images)
    with _autocast(images.device, precision):
        zs, _ = model.encode(x)
        back = model.decode(zs)
    return float((back.float() - x).abs().max())


def _with(cfg, **changes):
    from omegaconf import OmegaConf

    return OmegaConf.merge(cfg, changes)
