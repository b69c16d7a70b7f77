"""model.compile: compiled and eager models share one checkpoint format, in both directions.

nn.Module.compile compiles each level in place, so the state_dict keys do not change; a model
wrapped by torch.compile() (keys prefixed ``_orig_mod.``) still loads through glow.sampling.load.
Compilation is lazy: only the slow test below actually compiles (inductor on a CPU takes minutes).
"""

from __future__ import annotations

import pytest
import torch

from glow.module import DensityModule
from glow.sampling.load import load

CONFIG = {"image_shape": [3, 8, 8], "levels": 2, "steps": 2, "hidden_channels": 8}


def _module(compile: bool, seed: int) -> DensityModule:
    torch.manual_seed(seed)
    module = DensityModule({**CONFIG, "compile": compile})
    module.model.initialize(torch.rand(4, 3, 8, 8) - 0.5)
    if compile:  # what DensityModule.on_fit_start does after the ActNorm init
        module.model.compile_levels()
    return module


def _checkpoint(module: DensityModule, path, wrap_keys: bool = False):
    state = module.state_dict()
    if wrap_keys:  # what a torch.compile(model)-wrapped run would have written
        state = {k.replace("model.", "model._orig_mod.", 1) if k.startswith("model.") else k: v
                 for k, v in state.items()}
    torch.save({"state_dict": state, "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.mark.parametrize("source,target", [(True, False), (False, True)])
def test_checkpoint_loads_across_compiled_and_eager(tmp_path, source, target):
    saved = _module(compile=source, seed=0)
    assert (saved.model.levels[0]._compiled_call_impl is not None) == source
    fresh = _module(compile=target, seed=1)
    fresh.load_state_dict(saved.state_dict())  # what Lightning's resume does: strict keys
    for (name, a), b in zip(saved.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    rebuilt = load(_checkpoint(saved, tmp_path / "a.ckpt"))  # sample.py / evaluate.py's path
    x = torch.rand(2, 3, 8, 8) - 0.5
    eager = _module(compile=False, seed=2)
    eager.load_state_dict(saved.state_dict())
    torch.testing.assert_close(rebuilt.log_prob(x), eager.model.log_prob(x))


def test_orig_mod_checkpoint_loads_into_eager(tmp_path):
    saved = _module(compile=False, seed=0)
    rebuilt = load(_checkpoint(saved, tmp_path / "wrapped.ckpt", wrap_keys=True))
    x = torch.rand(2, 3, 8, 8) - 0.5
    torch.testing.assert_close(rebuilt.log_prob(x), saved.model.log_prob(x))


@pytest.mark.slow
def test_compiled_levels_compute_what_eager_ones_do():
    """Runs inductor once on a one-level, one-step Glow (minutes on 2 CPU cores)."""
    torch.manual_seed(0)
    config = {"image_shape": [3, 4, 4], "levels": 1, "steps": 1, "hidden_channels": 4}
    eager, compiled = DensityModule(config).model, DensityModule({**config, "compile": True}).model
    x = torch.rand(2, 3, 4, 4) - 0.5
    eager.initialize(x)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_levels()
    with torch.no_grad():
        torch.testing.assert_close(compiled.log_prob(x), eager.log_prob(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("memory", ["none", "invertible", "checkpoint"])
@pytest.mark.parametrize("permutation", ["conv_lu", "conv"])
def test_every_level_traces_as_one_graph(memory, permutation):
    """A graph break splits a level into pieces that inductor cannot fuse: the 1x1 conv's no-grad caches
    (keyed on data pointers) once broke every level into ten graphs, and model.compile ran slower than
    eager. torch._dynamo.explain traces without running inductor, so this is quick."""
    torch.manual_seed(0)
    model = DensityModule({**CONFIG, "levels": 2, "memory": memory, "permutation": permutation,
                        "channels_last": True}).model
    model.initialize(torch.rand(4, 3, 8, 8) - 0.5)
    x = torch.randn(4, 12, 4, 4).contiguous(memory_format=torch.channels_last)
    for level in model.levels:
        for grad in (True, False):  # no grad is where the caches live (sampling, evaluation)
            with torch.set_grad_enabled(grad):
                explained = torch._dynamo.explain(level)(x)
            assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
        # the next level's input: half the channels split off, the rest squeezed (4x the channels)
        x = torch.randn(4, 2 * x.shape[1], x.shape[2] // 2, x.shape[3] // 2).contiguous(
            memory_format=torch.channels_last)


@pytest.mark.slow
def test_compiled_invertible_step_gives_eager_gradients():
    """model.compile composes with model.memory=invertible: the autograd Function's nested
    autograd.grad runs inside the compiled level (~15 s of inductor on 2 CPU cores)."""
    images = torch.rand(4, 3, 8, 8) - 0.5
    grads = []
    for compile in (False, True):
        torch.manual_seed(0)
        model = DensityModule({**CONFIG, "memory": "invertible", "channels_last": True}).model
        model.initialize(images)
        if compile:
            model.compile_levels()
        model.log_prob(images).mean().backward()
        grads.append([p.grad for p in model.parameters()])
    eager, compiled = (torch.cat([g.flatten() for g in gs]) for gs in grads)
    # one scale for all: some gradients are float32 roundoff around zero, where inductor's different
    # summation order differs by more than 100% of a tiny value
    assert (compiled - eager).norm() <= 1e-4 * eager.norm()
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4 * eager.abs().max().item())
