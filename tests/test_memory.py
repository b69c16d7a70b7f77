"""model.memory: invertible and checkpoint modes give plain autograd's gradients, flat memory, plain init.

Gradient comparisons perturb every parameter after the ActNorm init, so that the zero-initialised
couplings are not the identity and every gradient is non-trivial.
"""

from __future__ import annotations

import pytest
import torch

from glow.activation_memory import saved_tensor_bytes
from glow.flows.memory import inversion_drift, segments_of
from glow.model import Glow
from tests.conftest import compose_train


def _model(memory: str, dtype=torch.float32, shape=(3, 8, 8), **kwargs) -> tuple[Glow, torch.Tensor, torch.Tensor | None]:
    torch.manual_seed(0)
    kwargs = {"levels": 2, "steps": 3, "hidden_channels": 8, **kwargs}
    model = Glow(shape, memory=memory, **kwargs).to(dtype)
    x = torch.rand(4, *shape, dtype=dtype) - 0.5
    cond = None
    if kwargs.get("conditional") == "class":
        cond = torch.tensor([0, 1, 2, 3])
    elif kwargs.get("conditional") == "image":
        cond = torch.rand(4, shape[0] + 1, *shape[1:], dtype=dtype)
    model.initialize(x, cond)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=generator, dtype=dtype))
    return model, x, cond


def _gradients(memory: str, autocast: bool = False, **kwargs) -> tuple[float, dict[str, torch.Tensor]]:
    model, x, cond = _model(memory, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = -model.log_prob(x, cond).mean()
    loss.backward()
    return float(loss.detach()), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


KINDS = [{"coupling": "additive"}, {"coupling": "affine"}, {"coupling": "spline"},
         {"affine_scale": "tanh"}, {"permutation": "reverse"}, {"permutation": "shuffle"},
         {"permutation": "conv"}, {"mask": "checkerboard"}, {"conditional": "class"},
         {"conditional": "image"},
         # the full c-Glow: U-Net encoder, conditional ActNorm and 1x1 conv, observed pixels as noise
         {"conditional": "image", "cond_encoder": "unet", "conditional_layers": True, "observed_noise": True},
         {"actnorm": False, "final_scaling": True, "learn_top": False},
         {"pixel_actnorm": True}, {"channels_last": True}]


@pytest.mark.parametrize("memory", ["invertible", "checkpoint"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_gradients_equal_plain_autograd(memory, kind):
    """fp32, rtol 1e-4 per element, plus atol 1e-5 x the tensor's largest gradient (float32
    roundoff of the recomputed inputs makes near-zero entries differ by more than 1e-4 relative)."""
    dtype = torch.float64 if kind.get("coupling") == "spline" else torch.float32
    # the spline's inverse solves a quadratic: in float32 its roundoff alone exceeds 1e-4, so it is
    # checked in float64 (the others are checked in float32, as the issue asks)
    loss_plain, plain = _gradients("none", dtype=dtype, **kind)
    loss, grads = _gradients(memory, dtype=dtype, **kind)
    assert loss == pytest.approx(loss_plain, rel=1e-6)
    assert grads.keys() == plain.keys()
    if kind.get("conditional") == "image":  # the condition encoder is trained through cond's gradient
        assert any(n.startswith("encoder.") and g.abs().max() > 0 for n, g in grads.items())
    for name, g in grads.items():
        torch.testing.assert_close(g, plain[name], rtol=1e-4, atol=1e-5 * float(plain[name].abs().max()),
                                   msg=lambda m: f"{name}: {m}")


def test_bf16_autocast_stays_finite_and_close_to_fp32():
    """Under bf16 autocast the invertible gradients are finite and within 5% (relative L2 over all
    parameters) of the fp32 gradients, and as close to them as plain bf16 autograd's (+1%)."""
    _, fp32 = _gradients("none")
    _, bf16_plain = _gradients("none", autocast=True)
    loss, bf16 = _gradients("invertible", autocast=True)
    flat = lambda g: torch.cat([g[n].flatten().float() for n in sorted(fp32)])  # noqa: E731
    assert torch.isfinite(flat(bf16)).all() and loss == loss
    error = float((flat(bf16) - flat(fp32)).norm() / flat(fp32).norm())
    plain_error = float((flat(bf16_plain) - flat(fp32)).norm() / flat(fp32).norm())
    assert error < 0.05 and error < plain_error + 0.01, (error, plain_error)


def test_activation_memory_is_flat_in_depth():
    def saved(memory: str, steps: int) -> int:
        model, x, _ = _model(memory, shape=(3, 16, 16), steps=steps, hidden_channels=16)
        loss, size = saved_tensor_bytes(lambda: model.log_prob(x).sum(), model)
        loss.backward()
        return size

    assert saved("invertible", 6) == pytest.approx(saved("invertible", 2), rel=0.1)
    assert saved("none", 6) > 2.5 * saved("none", 2)
    assert saved("none", 6) > 5 * saved("invertible", 6)
    assert saved("checkpoint", 6) < saved("none", 6) / 3


def test_actnorm_init_runs_the_plain_path():
    """Glow.initialize gives the same ActNorm parameters whatever the memory mode."""
    plain, _, _ = _model("none")
    for memory in ("invertible", "checkpoint"):
        other, _, _ = _model(memory)
        for (name, a), b in zip(plain.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b), (memory, name)


def test_inversion_drift_is_small_in_fp32():
    model, x, _ = _model("invertible", shape=(3, 16, 16), steps=8, hidden_channels=16)
    h, _ = model.squeeze(x)
    assert inversion_drift(model.levels[0], h) < 1e-4


@pytest.mark.slow
def test_twenty_training_steps_reach_the_same_loss(tmp_path, synthetic_folder):
    """20 Lightning steps (Adamax, warmup, clipping, non-finite guard) from the same seed: the final
    loss in invertible and checkpoint mode equals mode none's to 1e-3."""
    import train

    losses = {}
    for memory in ("none", "invertible", "checkpoint"):
        cfg = compose_train(tmp_path / memory, ["data=imagefolder", f"data.path={synthetic_folder}",
                                                "data.image_size=16", "data.batch_size=8", "trainer.max_steps=20",
                                                "trainer.val_check_interval=20", "callbacks.samples=null",
                                                "test_after_fit=false", f"model.memory={memory}"])
        torch.manual_seed(0)
        datamodule, module, trainer = train.build(cfg)
        trainer.fit(module, datamodule=datamodule)
        assert trainer.global_step == 20
        losses[memory] = float(trainer.callback_metrics["train/bpd"])
    assert losses["invertible"] == pytest.approx(losses["none"], abs=1e-3)
    assert losses["checkpoint"] == pytest.approx(losses["none"], abs=1e-3)


def test_bad_memory_mode_is_one_line(tmp_path, capsys):
    import train

    with pytest.raises(SystemExit):
        train.run(compose_train(tmp_path, ["model.memory=reversible"]))
    err = capsys.readouterr().err.strip()
    assert err == ("config error: model.memory='reversible' is not allowed: "
                   "use one of none, checkpoint, invertible"), err


@pytest.mark.slow
def test_ddp_averages_invertible_gradients(tmp_path):
    """2 CPU processes (gloo), DDP over a conditional Glow in invertible mode: each rank's gradients
    equal single-process plain autograd's on the whole batch (DDP's average of the two halves)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(repo / "tests" / "ddp_memory_worker.py"), str(rank), "2",
                               str(tmp_path / "init"), str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    model, x, cond = _model("none", conditional="image")
    halves = [-model.log_prob(x[i * 2:(i + 1) * 2], cond[i * 2:(i + 1) * 2]).mean() for i in range(2)]
    (sum(halves) / 2).backward()
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads_rank{rank}.pt", weights_only=True)
        assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
        for name, p in model.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5 * float(p.grad.abs().max()))


def test_a_checkpoint_resumes_under_another_memory_mode():
    from glow.checkpoints import CheckpointError, check_model_config
    from glow.model_args import RUNTIME_ARGUMENTS

    saved = {"hyper_parameters": {"model_config": {"steps": 2, "memory": "none"}}}
    check_model_config(saved, {"steps": 2, "memory": "invertible", "compile": True, "channels_last": True},
                       "last.ckpt", ignore=RUNTIME_ARGUMENTS)
    with pytest.raises(CheckpointError, match="steps 2 != 3"):
        check_model_config(saved, {"steps": 3, "memory": "invertible"}, "last.ckpt", ignore=RUNTIME_ARGUMENTS)


@pytest.mark.slow
def test_image_conditional_bf16_mixed_run_matches_mode_none(tmp_path, synthetic_folder):
    """c-Glow (the condition encoder trained through cond's gradient) under Lightning's bf16-mixed:
    6 steps in invertible mode end at mode none's loss (to 1e-3), with no skipped step."""
    import train

    losses = {}
    for memory in ("none", "invertible"):
        cfg = compose_train(tmp_path / memory, ["experiment=inpaint_cifar10", "data=imagefolder",
                                                f"data.path={synthetic_folder}", "data.image_size=16",
                                                "data.batch_size=8", "model.levels=2", "model.steps=2",
                                                "model.hidden_channels=8", "trainer.max_steps=6",
                                                "trainer.precision=bf16-mixed", "callbacks.samples=null",
                                                "test_after_fit=false", f"model.memory={memory}"])
        torch.manual_seed(0)
        datamodule, module, trainer = train.build(cfg)
        trainer.fit(module, datamodule=datamodule)
        assert int(module.nonfinite_steps) == 0
        losses[memory] = float(trainer.callback_metrics["train/bpd"])
    assert losses["invertible"] == pytest.approx(losses["none"], abs=1e-3)


def test_backward_segments_put_each_coupling_with_the_next_steps_actnorm_and_conv():
    """K + 1 autograd.grad calls per level of K steps: a leading [ActNorm, 1x1 conv], then
    [coupling, next ActNorm, next 1x1 conv], and the last coupling alone; every parameter exactly once."""
    model, _, _ = _model("invertible", steps=3)
    level = model.levels[0]
    segments = segments_of(level.layers)
    names = [[type(layer).__name__ for layer in s.layers] for s in segments]
    assert names == [["ActNorm", "InvConv1x1LU"]] + [["Coupling", "ActNorm", "InvConv1x1LU"]] * 2 + [["Coupling"]]
    flat = [p for s in segments for p in s.params]
    assert len(flat) == len(set(map(id, flat))) and set(map(id, flat)) == set(map(id, level.parameters()))
