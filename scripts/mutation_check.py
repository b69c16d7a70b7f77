"""Mutation check of the fast tests: one-line bugs in the core, applied one at a time to a copy of the
repository, each of which the fast subset (pytest -m "not slow") must fail.

    python scripts/mutation_check.py                  # every mutation, against the test files named beside it
    python scripts/mutation_check.py only=3,17 full=true json=mutations.json   # some, against the whole fast subset

A mutation is a (file, exact text, replacement, test files) row of MUTATIONS below: flow logdets, priors,
temperature, dequantisation and bits/dim, the paste-back of observed pixels, checkpoint path safety. Each
runs ``pytest -x -m "not slow"`` on its test files (or, with full=true, on everything) in a scratch copy;
"killed" means a test failed, "SURVIVED" that none did. A row whose text is no longer in its file is
reported as stale (the code moved on: update the row). Exit code 1 if any mutation survived.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FLOWS = ["tests/test_flows.py", "tests/test_model.py", "tests/test_core_density.py"]
PRIORS = ["tests/test_core_density.py", "tests/test_model.py", "tests/test_latent_inpaint.py"]
QUANT = ["tests/test_claims.py", "tests/test_core_density.py", "tests/test_interface.py"]
PASTE = ["tests/test_paste_back.py", "tests/test_inpaint.py", "tests/test_cglow.py", "tests/test_demo.py"]
CKPT = ["tests/test_checkpoint_safety.py", "tests/test_reliability.py"]

# (file, exact text, its one-line mutation, the fast test files to run)
MUTATIONS = [
 # flows: logdets
 ("glow/flows/actnorm.py", "value = self.log_scale.to(logdet_dtype(x)).sum() * (h * w)", "value = self.log_scale.to(logdet_dtype(x)).sum() * h", FLOWS),
 ("glow/flows/actnorm.py", "        return x, -self._logdet(y)\n\n\nclass DiagonalScale", "        return x, self._logdet(y)\n\n\nclass DiagonalScale", FLOWS),
 ("glow/flows/actnorm.py", "y = (x + self.loc) * torch.exp(self.log_scale)", "y = (x + self.loc) * torch.exp(-self.log_scale)", FLOWS),
 ("glow/flows/actnorm.py", "        return self.log_scale.to(logdet_dtype(x)).sum().expand(x.shape[0])\n\n    def forward", "        return self.log_scale.to(logdet_dtype(x)).mean().expand(x.shape[0])\n\n    def forward", FLOWS),
 ("glow/flows/actnorm.py", "        return self.log_scale.to(logdet_dtype(x)).sum().expand(x.shape[0])\n\n\n@torch", "        return self.log_scale.to(logdet_dtype(x)).mean().expand(x.shape[0])\n\n\n@torch", FLOWS + ["tests/test_pixel_actnorm.py"]),
 ("glow/flows/conv1x1.py", "return (sign * pixels * self.log_abs_det()).to(logdet_dtype(x)).expand(x.shape[0])", "return (sign * self.log_abs_det()).to(logdet_dtype(x)).expand(x.shape[0])", FLOWS),
 ("glow/flows/conv1x1.py", "frozen[entry] = (sign * pixels * self.log_abs_det()).to(logdet_dtype(x))", "frozen[entry] = (pixels * self.log_abs_det()).to(logdet_dtype(x))", FLOWS),
 ("glow/flows/conv1x1.py", "return torch.linalg.slogdet(self.w.double())[1]", "return torch.linalg.slogdet(self.w.double())[1] / self.w.shape[0]", FLOWS),
 ("glow/flows/conv1x1.py", "return self.log_s.double().sum()", "return self.log_s.double().abs().sum()", FLOWS),
 ("glow/flows/conv1x1.py", "torch.diag(sign * torch.exp(self.log_s.double()))", "torch.diag(sign * torch.exp(2 * self.log_s.double()))", FLOWS),
 ("glow/flows/coupling.py", "return torch.cat([xa, yb], dim=1), sum_except_batch(elem_logdet)", "return torch.cat([xa, yb], dim=1), sum_except_batch(elem_logdet.abs())", FLOWS),
 ("glow/flows/coupling.py", "return x * m + yb * (1 - m), sum_except_batch(elem_logdet * (1 - m))", "return x * m + yb * (1 - m), sum_except_batch(elem_logdet)", FLOWS),
 ("glow/flows/elementwise.py", "return (x + shift) * torch.exp(log_scale), log_scale", "return (x + shift) * torch.exp(log_scale), -log_scale", FLOWS),
 ("glow/flows/elementwise.py", "return y * torch.exp(-log_scale) - shift, -log_scale", "return y * torch.exp(-log_scale) - shift, log_scale", FLOWS),
 ("glow/flows/elementwise.py", "return F.logsigmoid(raw + 2.0)", "return torch.sigmoid(raw + 2.0)", FLOWS),
 ("glow/flows/elementwise.py", "return x + params[:, :, 0], torch.zeros_like(x)", "return x + params[:, :, 0], torch.ones_like(x) * 1e-3", FLOWS),
 ("glow/flows/elementwise.py", "return v, (v + shift) * scale, log_scale", "return v, (v + shift) * scale, -log_scale", FLOWS + ["tests/test_memory.py"]),
 ("glow/flows/spline.py", "logabsdet = logabsdet.index_put((inside,), -lad if inverse else lad)", "logabsdet = logabsdet.index_put((inside,), lad)", FLOWS + ["tests/test_spline.py"]),
 ("glow/flows/spline.py", "lad = torch.log(deriv_num) - 2 * torch.log(denominator)", "lad = torch.log(deriv_num) - torch.log(denominator)", FLOWS + ["tests/test_spline.py"]),
 ("glow/flows/spline.py", "deriv_num = s_k.pow(2) * (d_k1 * xi.pow(2) + 2 * s_k * xi_1m + d_k * (1 - xi).pow(2))", "deriv_num = s_k * (d_k1 * xi.pow(2) + 2 * s_k * xi_1m + d_k * (1 - xi).pow(2))", FLOWS + ["tests/test_spline.py"]),
 ("glow/flows/squeeze.py", "if x.shape[-1] % 2 or x.shape[-2] % 2:", "if x.shape[-1] % 2 and x.shape[-2] % 2:", FLOWS),
 ("glow/flows/squeeze.py", "return F.pixel_unshuffle(x, 2), zeros_logdet(x)", "return F.pixel_unshuffle(x, 2), zeros_logdet(x) + 1.0", FLOWS),
 ("glow/priors.py", "return torch.cat([kept, z.to(kept.dtype)], dim=1)", "return torch.cat([z.to(kept.dtype), kept], dim=1)", FLOWS),
 ("glow/model.py", "            logdet = logdet + step_logdet", "            logdet = step_logdet", FLOWS),
 ("glow/model.py", "            logdet = logdet + pixel_logdet", "            logdet = logdet - pixel_logdet", FLOWS + ["tests/test_pixel_actnorm.py"]),
 # priors
 ("glow/priors.py", "LOG_2PI = math.log(2 * math.pi)", "LOG_2PI = math.log(math.pi)", PRIORS),
 ("glow/priors.py", "-0.5 * (LOG_2PI + 2 * log_std + ((z - mean) * torch.exp(-log_std)) ** 2)", "-0.5 * (LOG_2PI + log_std + ((z - mean) * torch.exp(-log_std)) ** 2)", PRIORS),
 ("glow/priors.py", "-0.5 * (LOG_2PI + 2 * log_std + ((z - mean) * torch.exp(-log_std)) ** 2)", "-0.5 * (LOG_2PI + 2 * log_std + ((z - mean) * torch.exp(-2 * log_std)) ** 2)", PRIORS),
 ("glow/priors.py", "return mean + temperature * torch.exp(log_std) * noise.to(mean.dtype)", "return mean + temperature ** 2 * torch.exp(log_std) * noise.to(mean.dtype)", PRIORS),
 ("glow/priors.py", "return mean + temperature * torch.exp(log_std) * noise.to(mean.dtype)", "return mean + temperature * torch.exp(2 * log_std) * noise.to(mean.dtype)", PRIORS),
 ("glow/priors.py", "return mean + temperature * torch.exp(log_std) * noise.to(mean.dtype)", "return mean + temperature * torch.exp(log_std / temperature if temperature else log_std) * noise.to(mean.dtype)", PRIORS),
 ("glow/priors.py", "h = self._add_conditioning(self.conv(kept), labels, features)", "h = self._add_conditioning(self.conv(kept) * 0, labels, features)", PRIORS),
 ("glow/model.py", "                log_prior = log_prior + gaussian_log_prob(z, *params)", "                log_prior = gaussian_log_prob(z, *params)", PRIORS),
 ("glow/model.py", "        log_prior = log_prior + gaussian_log_prob(h, *params)", "        log_prior = gaussian_log_prob(h, *params)", PRIORS),
 ("glow/model.py", "params = split.prior.params(h, labels, features[level])", "params = split.prior.params(z, labels, features[level])", PRIORS),
 ("glow/model.py", "return [(z - mean.to(z.dtype)) / (temperature * torch.exp(log_std.to(z.dtype)))", "return [(z - mean.to(z.dtype)) / (torch.exp(log_std.to(z.dtype)))", PRIORS),
 ("glow/autoregressive.py", "return self.decode([z.to(anchor.dtype) * temperature])", "return self.decode([z.to(anchor.dtype) * temperature ** 2])", PRIORS + ["tests/test_families.py"]),
 ("glow/vae.py", "return self.decode([z * temperature])", "return self.decode([z * temperature ** 0.5])", PRIORS + ["tests/test_families.py"]),
 # dequantisation, bits/dim
 ("glow/quantize.py", "    return (x + noise) / bins - 0.5", "    return (x + noise) / bins + 0.5", QUANT),
 ("glow/quantize.py", "noise = torch.full_like(x, 0.5)", "noise = torch.full_like(x, 0.0)", QUANT),
 ("glow/quantize.py", "if generator is not None else torch.rand_like(x)", "if generator is not None else torch.rand_like(x) - 0.5", QUANT),
 ("glow/quantize.py", "noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) \\", "noise = 0.5 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) \\", QUANT),
 ("glow/quantize.py", "        x = torch.floor(x / 2 ** (8 - n_bits))", "        x = torch.round(x / 2 ** (8 - n_bits))", QUANT),
 ("glow/quantize.py", "    bins = 2 ** n_bits\n    x = reduce_bits", "    bins = 2 ** (n_bits - 1)\n    x = reduce_bits", QUANT),
 ("glow/quantize.py", "log_bins = num_dims * n_bits * math.log(2.0)", "log_bins = n_bits * math.log(2.0)", QUANT),
 ("glow/quantize.py", "log_bins = num_dims * n_bits * math.log(2.0)", "log_bins = num_dims * (n_bits - 1) * math.log(2.0)", QUANT),
 ("glow/quantize.py", "return (-log_prob.double() + log_bins) / (num_dims * math.log(2.0))", "return (-log_prob.double() + log_bins) / num_dims", QUANT),
 ("glow/quantize.py", "return (-log_prob.double() + log_bins) / (num_dims * math.log(2.0))", "return (log_prob.double() + log_bins) / (num_dims * math.log(2.0))", QUANT),
 ("glow/quantize.py", "x = torch.floor((y.detach().float() + 0.5) * bins).clamp_(0, bins - 1)", "x = torch.round((y.detach().float() + 0.5) * bins).clamp_(0, bins - 1)", QUANT + ["tests/test_sampling.py"]),
 ("glow/density.py", "self.num_dims = math.prod(self.image_shape)", "self.num_dims = math.prod(self.image_shape[1:])", QUANT),
 ("glow/density.py", "bpd = bits_per_dim(self.log_prob(inputs.x, inputs.cond), self.num_dims, inputs.n_bits)\n", "bpd = bits_per_dim(self.log_prob(inputs.x, inputs.cond), self.num_dims)\n", QUANT),
 ("glow/density.py", "missing_dims = (inputs.hole.flatten(1).sum(1) * self.image_shape[0]).clamp_min(1)", "missing_dims = (inputs.hole.flatten(1).sum(1)).clamp_min(1)", QUANT),
 # paste-back of observed pixels
 ("glow/sampling/inpaint_result.py", "completions = torch.where(m_rep.bool(), filled, x_rep)", "completions = torch.where(m_rep.bool(), x_rep, filled)", PASTE),
 ("glow/sampling/inpaint_result.py", "completions = torch.where(m_rep.bool(), filled, x_rep)", "completions = filled", PASTE),
 ("glow/sampling/inpaint_result.py", "return x.repeat_interleave(n, dim=0), broadcast_mask(mask, x).repeat_interleave(n, dim=0)", "return x.repeat(n, 1, 1, 1), broadcast_mask(mask, x).repeat(n, 1, 1, 1)", PASTE),
 ("glow/sampling/inpaint.py", "keep = (broadcast_mask(mask, images_uint8.float()) == 0).unsqueeze(1).expand_as(filled)", "keep = (broadcast_mask(mask, images_uint8.float()) == 1).unsqueeze(1).expand_as(filled)", PASTE),
 ("glow/sampling/inpaint.py", "return torch.where(keep, images_uint8.unsqueeze(1).expand_as(filled), filled)", "return filled", PASTE),
 ("glow/sampling/cglow_route.py", "cond = make_condition(x_rep, m_rep[:, :1])", "cond = make_condition(x_rep, 1 - m_rep[:, :1])", PASTE),
 ("glow/sampling/latent.py", "return torch.where(hole_rep.bool(), images, x_rep), stats", "return images, stats", PASTE + ["tests/test_latent_inpaint.py"]),
 ("glow/flows/observed.py", "return torch.where(hole.bool(), y, centres + (u - 0.5) * width), -logdet", "return torch.where(hole.bool(), y, centres + u * width), -logdet", PASTE),
 # checkpoint path safety
 ("glow/checkpoints.py", "real, base = os.path.realpath(text), os.path.realpath(str(root))", "real, base = os.path.abspath(text), os.path.abspath(str(root))", CKPT),
 ("glow/checkpoints.py", "real, base = os.path.realpath(text), os.path.realpath(str(root))", "real, base = os.path.normpath(text), os.path.normpath(str(root))", CKPT),
 ("glow/checkpoints.py", "return os.path.commonpath([real, base]) == base and real != base", "return os.path.commonpath([real, base]) == base or real != base", CKPT),
 ("glow/checkpoints.py", "return os.path.commonpath([real, base]) == base and real != base", "return real.startswith(base) and real != base", CKPT),
 ("glow/checkpoints.py", "if self.root is None or not inside(path, self.root) or not str(path).endswith(\".ckpt\") \\", "if self.root is None or not inside(path, self.root) and not str(path).endswith(\".ckpt\") \\", CKPT),
 ("glow/checkpoints.py", "if self.root is None or not inside(path, self.root) or not str(path).endswith(\".ckpt\") \\", "if self.root is None or not str(path).endswith(\".ckpt\") \\", CKPT),
 ("glow/checkpoints.py", "        with suppress(FileNotFoundError):\n            os.unlink(path)", "        with suppress(FileNotFoundError):\n            pass", CKPT),
 ("glow/checkpoint_callbacks.py", "return isinstance(p, str) and p.endswith(\".ckpt\") and inside(p, root)", "return isinstance(p, str) and p.endswith(\".ckpt\") or inside(p, root)", CKPT),
 ("glow/checkpoint_callbacks.py", "if self.dirpath is not None and inside(filepath, self.dirpath) and filepath.endswith(\".ckpt\"):", "if self.dirpath is not None and inside(filepath, self.dirpath) or filepath.endswith(\".ckpt\"):", CKPT),
 ("glow/checkpoint_callbacks.py", "if self._start_step is None or trainer.global_step <= self._start_step:", "if self._start_step is None or trainer.global_step < self._start_step:", CKPT),
 ("glow/checkpoint_callbacks.py", "if self._start_step is None or trainer.global_step <= self._start_step:", "if self._start_step is None or trainer.global_step >= self._start_step:", CKPT),
 ("glow/checkpoints.py", "    tmp = path.parent / f\".{path.name}.{os.getpid()}.tmp\"", "    tmp = path", CKPT),
 ("glow/checkpoints.py", "if m and f.is_file() and not _pid_alive(int(m[\"pid\"])):", "if m and f.is_file():", CKPT),
 ("glow/checkpoints.py", "checkpoint = torch.load(path, map_location=map_location, weights_only=True)", "checkpoint = torch.load(path, map_location=map_location, weights_only=False)", CKPT),
 # more: init, composition, cache paths, display, bounds
 ("glow/flows/actnorm.py", "        self.loc.copy_(-mean.view_as(self.loc))\n        self.log_scale.copy_(log_scale.view_as", "        self.loc.copy_(mean.view_as(self.loc))\n        self.log_scale.copy_(log_scale.view_as", FLOWS),
 ("glow/flows/actnorm.py", "torch.where(std > self.min_std, -torch.log(std.clamp_min(self.min_std)), torch.zeros_like(std))", "torch.where(std > self.min_std, torch.log(std.clamp_min(self.min_std)), torch.zeros_like(std))", FLOWS),
 ("glow/flows/base.py", "return t.to(dtype).reshape(t.shape[0], -1).sum(dim=1)", "return t.to(dtype).reshape(t.shape[0], -1).mean(dim=1)", FLOWS),
 ("glow/flows/base.py", "for layer in reversed(self.layers):", "for layer in self.layers:", FLOWS),
 ("glow/flows/conv1x1.py", "                frozen[inverse, dtype] = (torch.linalg.inv(w) if inverse else w).to(dtype)", "                frozen[inverse, dtype] = w.to(dtype)", FLOWS),
 ("glow/flows/conv1x1.py", "lower = self.lower.double() * mask + eye", "lower = self.lower.double() * mask.T + eye", FLOWS),
 ("glow/quantize.py", "x = torch.floor((y.detach().float() + 0.5) * bins).clamp_(0, bins - 1)", "x = torch.floor((y.detach().float() + 0.5) * bins).clamp_(0, bins)", QUANT + PASTE),
 ("glow/quantize.py", "or not 1 <= n_bits <= 8:", "or not 1 < n_bits <= 8:", QUANT),
 ("glow/sampling/inpaint.py", "filled = to_uint8(result.completions, n_bits)", "filled = to_uint8(result.completions)", PASTE),
 ("glow/sampling/cglow_route.py", "samples = model.sample(x_rep.shape[0], temperature=options.temperature, cond=cond)", "samples = model.sample(x_rep.shape[0], temperature=1.0, cond=cond)", PASTE),
 ("glow/density.py", "self._x = preprocess(self.images, self.n_bits, generator=self.generator)", "self._x = preprocess(self.images, self.n_bits)", QUANT),
 ("glow/flows/conv1x1.py", "pixels = x.shape[-2] * x.shape[-1]", "pixels = x.shape[-1] * x.shape[-1]", FLOWS),
 ("glow/flows/actnorm.py", "        h, w = x.shape[-2:]\n        value", "        h, w = x.shape[1:3]\n        value", FLOWS),
 ("glow/sampling/pixel_mcmc.py", "lp = log_prob(x).to(x.dtype) / temperature", "lp = log_prob(x).to(x.dtype) * temperature", PASTE),
 ("glow/sampling/latent.py", "temperature=options.temperature, init=options.init or \"sir\",", "temperature=1.0, init=options.init or \"sir\",", PASTE + PRIORS),
]


def run_tests(copy: Path, files: list[str], full: bool) -> tuple[int, list[str]]:
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", "-rfE"]
    command += [] if full else [f for f in dict.fromkeys(files) if (copy / f).exists()]
    env = dict(os.environ, PYTHONPATH=str(copy), WANDB_MODE="offline", OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=3600)
    return done.returncode, re.findall(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.M)


def main(argv: list[str]) -> int:
    options = dict(arg.split("=", 1) for arg in argv)
    unknown = set(options) - {"only", "full", "json"}
    if unknown:
        print(f"config error: {sorted(unknown)[0]} is not allowed: use only=3,17 full=true json=PATH", file=sys.stderr)
        return 2
    only = {int(i) for i in options["only"].split(",")} if "only" in options else None
    full = options.get("full", "false").lower() == "true"
    rows = []
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as scratch:
        copy = Path(scratch) / "repo"
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", "__pycache__", ".venv", "outputs", "multirun"))
        for i, (path, old, new, files) in enumerate(MUTATIONS):
            if only is not None and i not in only:
                continue
            target = copy / path
            text = target.read_text()
            if text.count(old) != 1:
                rows.append({"id": i, "where": path, "status": "stale", "caught_by": None})
                print(f"#{i} {path}: stale (the text is there {text.count(old)} times)", flush=True)
                continue
            where = f"{path}:{text[:text.index(old)].count(chr(10)) + 1}"
            target.write_text(text.replace(old, new))
            started = time.time()
            try:
                code, failed = run_tests(copy, files, full)
            finally:
                target.write_text(text)
            status = "killed" if code != 0 else "SURVIVED"
            rows.append({"id": i, "where": where, "status": status, "caught_by": failed[0] if failed else None,
                         "mutation": new.strip()})
            print(f"#{i} {where} {status} {failed[0] if failed else ''} ({time.time() - started:.0f} s)", flush=True)
    if "json" in options:
        Path(options["json"]).write_text(json.dumps(rows, indent=1))
    survived = [r for r in rows if r["status"] == "SURVIVED"]
    print(f"{len(rows) - len(survived)} of {len(rows)} killed; survived: {[r['where'] for r in survived]}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
