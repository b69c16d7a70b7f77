"""Training speed, activation memory and sampling speed of Glow, one subprocess per row (so each row's
peak memory is its own). Ratios within one run are what to quote: this machine is noisy.

    python scripts/benchmark.py                                   # the CPU set (memory + minimal), < 10 min on 2 cores
    python scripts/benchmark.py suite=memory json=out.json        # L=3 h=64 batch 16, K=8/16/32 x none|checkpoint|invertible
    python scripts/benchmark.py plot_from=out.json plot=docs/activation_memory.png   # the memory-vs-depth plot
    python scripts/benchmark.py suite=minimal                     # the peers' configs: L=3 K=8 h=128 and L=3 K=32 h=64, batch 64
    python scripts/benchmark.py suite=one model.memory=invertible model.steps=32 channels_last=false
    python scripts/benchmark.py suite=gpu device=cuda json=gpu.json   # the paper's CIFAR setting (scripts/gpu_benchmark.sh)
    python scripts/benchmark.py suite=precision json=precision.json  # fp32 against bf16, interleaved in one process

The loop is minimal on purpose (what peers' figures measure): our Glow, Adamax, random uint8 3x32x32
batches dequantised by glow.quantize.preprocess, bits/dim loss, backward, step; no Lightning, no data
loading. Each row: ``warmup`` steps, then ``iters`` timed steps.

``activation_mem_mb``: on CPU the bytes autograd saves for backward in one forward (glow.activation_memory,
storages deduplicated, parameters excluded); on CUDA the peak allocated during a step minus what was
allocated before it (``activation_mem_method`` says which). ``tflops``: one step's model FLOPs (``model_flops``)
per second. ``of_gemm`` = tflops / ``gemm_tflops``, a large matrix product's rate in the same process, dtype and
threads: how close the step runs to this machine's BLAS, which bounds any implementation (docs/performance.md).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from glow.activation_memory import METHOD as CPU_MEMORY_METHOD, saved_tensor_bytes
from glow.cli import parse_cli
from glow.errors import exit_with_config_error
from glow.flows import nets
from glow.model import Glow
from glow.precision_benchmark import measure_precisions
from glow.quantize import bits_per_dim, preprocess

CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULTS = OmegaConf.load(CONF / "benchmark.yaml")  # the keys, with their comments (--help shows them)


def _memory_rows(batch: int, width: int, depths=(8, 16, 32)) -> list[dict]:
    return [{"batch_size": batch, "model.hidden_channels": width, "model.steps": k, "model.memory": m}
            for k in depths for m in ("none", "checkpoint", "invertible")]


PEERS = [{"model.steps": 8, "model.hidden_channels": 128, "batch_size": 64},
         {"model.steps": 32, "model.hidden_channels": 64, "batch_size": 64}]
MNIST_DEFAULT = {"model.steps": 8, "model.hidden_channels": 64, "model.affine_scale": "tanh", "image_shape": [1, 32, 32]}
PAPER = {"device": "cuda", "precision": "bf16", "model.steps": 32, "model.hidden_channels": 512, "iters": 20,
         "warmup": 5}
SUITES = {
    "memory": _memory_rows(16, 64),
    "minimal": PEERS,
    "cpu": _memory_rows(16, 64) + PEERS + [{**PEERS[0], "channels_last": False}],
    # what each speed change gains: the peers' configs with and without it, and the K=32 time ratios
    "speed": [{**p, **change} for p in PEERS for change in ({}, {"fold_actnorm": False}, {"channels_last": False})]
    + _memory_rows(16, 64, depths=(32,)),
    "ratio": _memory_rows(16, 64, depths=(32,)) + [PEERS[0], {**PEERS[0], "fold_actnorm": False}],  # quick
    "one": [{}],
    # fp32 and bf16 alternating in one process (glow.precision_benchmark), two rows each: the peers' configs
    # and the default MNIST run's model (conf/model/glow_small.yaml; MNIST is padded to 32x32)
    "precision": [{**p, "precision": "interleaved"} for p in PEERS + [MNIST_DEFAULT]],
    "gpu": [{**PAPER, "batch_size": 64, "model.memory": m} for m in ("none", "checkpoint", "invertible")]
    + [{**PAPER, "batch_size": 64, "compile": True}, {**PAPER, "batch_size": 64, "channels_last": False},
       {**PAPER, "batch_size": 256, "model.memory": "invertible", "iters": 5}],
}


def build(cfg):
    device = torch.device(cfg.device)
    torch.manual_seed(0)
    model = Glow(tuple(cfg.image_shape), **OmegaConf.to_container(cfg.model), channels_last=cfg.channels_last)
    model = model.to(device)
    images = torch.randint(0, 256, (cfg.batch_size, *cfg.image_shape), dtype=torch.uint8, device=device)
    model.initialize(preprocess(images))
    if cfg.compile:
        model.compile_levels()
    return model, images


def measure(cfg) -> dict:  # in the child process: one row
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    nets.FOLD_ACTNORM = cfg.fold_actnorm  # false: the coupling nets' ActNorms as separate ops (the old step)
    cuda = cfg.device.startswith("cuda")
    if cuda:  # what train.py sets on a GPU, plus autotuned convolutions (fixed shapes here)
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    model, images = build(cfg)
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-4)
    autocast = lambda: torch.autocast(model.top_prior.anchor.device.type, dtype=torch.bfloat16,  # noqa: E731
                                      enabled=cfg.precision == "bf16")

    def loss_fn():
        with autocast():
            return bits_per_dim(model.log_prob(preprocess(images)), model.num_dims).mean()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(cfg.warmup):
        step()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    if cuda:
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(cfg.iters):
        start = time.perf_counter()
        loss = step()
        sync()  # per step on CUDA too: the median of single steps shrugs off a busy neighbour's spikes
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    if cuda:
        activation, method = torch.cuda.max_memory_allocated() - before, "cuda max allocated minus weights+optimiser"
        peak = torch.cuda.max_memory_allocated()
    else:
        optimizer.zero_grad(set_to_none=True)
        loss_saved, activation = saved_tensor_bytes(loss_fn, model)
        loss_saved.backward()
        method, peak = CPU_MEMORY_METHOD, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    flops = model_flops(cfg)
    gemm = gemm_tflops(torch.device(cfg.device), torch.bfloat16 if cfg.precision == "bf16" else torch.float32)
    model.eval()
    with torch.no_grad():
        model.sample(cfg.batch_size)  # warm-up
        sync()
        start = time.perf_counter()
        for _ in range(cfg.sample_batches):
            model.sample(cfg.batch_size)
        sync()
        sampling = cfg.sample_batches * cfg.batch_size / (time.perf_counter() - start)
    return {**OmegaConf.to_container(cfg.model), "batch_size": cfg.batch_size, "precision": cfg.precision,
            "compile": cfg.compile, "channels_last": cfg.channels_last, "fold_actnorm": cfg.fold_actnorm,
            "device": cfg.device, "threads": torch.get_num_threads(),
            "step_s": step_s, "images_per_s": cfg.batch_size / step_s,
            "activation_mem_mb": activation / 2 ** 20, "activation_mem_method": method,
            "peak_mem_mb": peak / 2 ** 20, "peak_mem_kind": "cuda max allocated" if cuda else "process max RSS",
            "sampling_images_per_s": sampling, "tflops": flops / step_s / 1e12, "step_gflop": flops / 1e9,
            "gemm_tflops": gemm, "of_gemm": flops / step_s / 1e12 / gemm,
            "params": sum(p.numel() for p in model.parameters()), "final_loss": float(loss)}


def model_flops(cfg) -> int:
    """FLOPs of one training step of the row's model, counted by torch.utils.flop_counter on an eager
    plain-autograd twin: the flop counter's module hooks cannot follow the nested autograd.grad of
    model.memory=invertible, and counting the twin leaves recomputation out, so every memory mode's
    TFLOP/s is the same useful work per second (the usual model-FLOPs convention). Counted at batch 64
    at most and scaled (a plain step at the invertible rows' large batches need not fit); FLOPs are
    linear in the batch but for the 1x1 convs' weight assembly, under 0.1% of a step at h >= 64."""
    from torch.utils.flop_counter import FlopCounterMode
    batch = min(cfg.batch_size, 64)
    twin, images = build(OmegaConf.merge(cfg, {"compile": False, "batch_size": batch, "model": {"memory": "none"}}))
    with FlopCounterMode(display=False) as counter, torch.autocast(images.device.type, dtype=torch.bfloat16,
                                                                  enabled=cfg.precision == "bf16"):
        bits_per_dim(twin.log_prob(preprocess(images)), twin.num_dims).mean().backward()
    del twin, images
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return round(counter.get_total_flops() * cfg.batch_size / batch)


def gemm_tflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """The rate of an n x n x n matrix product (n = 2048 on CPU, 8192 on CUDA): the machine's ceiling
    for dense arithmetic at this dtype and thread count, the yardstick for a step's TFLOP/s."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e12


def run_row(cli: dict, row: dict) -> dict:
    args = [f"{k}={v}" for k, v in {**cli, **row}.items() if k not in ("suite", "json", "plot", "repeats")] + ["_child=true"]
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        return {"error": tail, **row}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # a row, or a list of rows


def best(tries: list[dict]) -> dict:
    ok = [t for t in tries if "error" not in t]
    if not ok:
        return tries[0]
    top = min(ok, key=lambda t: t["step_s"])
    return {**top, "images_per_s_runs": [round(t["images_per_s"], 2) for t in ok]}


def table(rows: list[dict]) -> str:
    head = ("| memory | K | h | batch | precision | compile | channels_last | fold ActNorm | images/s | step s "
            "| activation MB | sampling img/s | TFLOP/s | of GEMM | peak MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r.get('model.memory', '')} | {r.get('model.steps', '')} | | {r.get('batch_size', '')} "
                         f"| failed: {r['error'][:80]} |")
            continue
        tf = f"{r['tflops']:.3f}" if r.get("tflops") else "-"
        of_gemm = f"{r['of_gemm']:.0%}" if r.get("of_gemm") else "-"
        mb, sampling, peak = (f"{r[k]:.0f}" if r.get(k) else "-" for k in ("activation_mem_mb",
                                                                            "sampling_images_per_s", "peak_mem_mb"))
        lines.append(f"| {r['memory']} | {r['steps']} | {r['hidden_channels']} | {r['batch_size']} | {r['precision']} "
                     f"| {r['compile']} | {r['channels_last']} | {r.get('fold_actnorm', True)} | {r['images_per_s']:.1f} | {r['step_s']:.3f} "
                     f"| {mb} | {sampling} | {tf} | {of_gemm} | {peak} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Activation memory against depth K, one line per memory mode (rows of one width and batch)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "error" not in r and r["batch_size"] == 16]
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=120)
    for memory in ("none", "checkpoint", "invertible"):
        points = sorted((r["steps"], r["activation_mem_mb"]) for r in rows if r["memory"] == memory)
        if points:
            ax.plot(*zip(*points), marker="o", label=memory)
    if rows:
        r = rows[0]
        ax.set_title(f"Glow L={r['levels']}, h={r['hidden_channels']}, batch {r['batch_size']}, "
                     f"3x32x32, {r['device']}", fontsize=9)
    ax.set_xlabel("steps per level K")
    ax.set_ylabel("activation memory (MB saved for backward)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="model.memory")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"plot written to {path}")


def main() -> None:
    suites = {"suite=NAME": [(name, f"{len(rows)} row{'s' * (len(rows) > 1)}") for name, rows in SUITES.items()]}
    cli, cfg = parse_cli(DEFAULTS, "benchmark", CONF, choices=suites)  # --help; an unknown key: one line, exit 2
    if cli.pop("_child", False):  # one row, or two for precision=interleaved
        print(json.dumps(measure_precisions(cfg, build, model_flops, gemm_tflops) if cfg.precision == "interleaved"
                         else measure(cfg)))
        return
    if cfg.plot_from:  # redraw from a saved run, no measuring
        plot(json.loads(Path(cfg.plot_from).read_text())["rows"], Path(cfg.plot or "activation_memory.png"))
        return
    for key, allowed in (("suite", tuple(SUITES)), ("precision", ("fp32", "bf16", "interleaved"))):
        if cfg[key] not in allowed:
            exit_with_config_error(f"{key}={cfg[key]!r} is not allowed: use one of {', '.join(allowed)}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        exit_with_config_error(f"device={cfg.device!r} is not allowed: CUDA is not available on this machine")
    flat = _flatten(OmegaConf.to_container(cli))
    runs = []  # repeats > 1: the whole suite again, rows alternating, and each row keeps its best run
    for _ in range(cfg.repeats):
        runs.append([])
        for row in SUITES[cfg.suite]:
            result = run_row(flat, row)
            runs[-1].extend(result if isinstance(result, list) else [result])
            print("\n".join(table(result if isinstance(result, list) else [result]).splitlines()[2:]), flush=True)
    rows = [best(list(tries)) for tries in zip(*runs)]
    print("\n" + table(rows))
    if cfg.json:
        path = Path(cfg.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"suite": cfg.suite, "cli": flat, "rows": rows}, indent=2))
        print(f"\nwritten to {path}")
    if cfg.plot:
        plot(rows, Path(cfg.plot))
    if any("error" in r for r in rows):
        sys.exit("some rows failed (see the table)")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


if __name__ == "__main__":
    main()
