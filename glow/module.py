"""The LightningModule that trains every model family: loss through the family's objective, data-dependent
init, optimiser + warmup, EMA, non-finite guard, evaluation figures.

It talks to the model only through glow.density.DensityModel. The model's kwargs are saved as plain
hyper-parameters, so any checkpoint rebuilds its model with ``glow.sampling.load`` and loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from glow.checkpoints import FORMAT_KEY, FORMAT_VERSION
from glow.conditioning import training_condition
from glow.density import DensityModel, ModelInputs, ObjectiveTerms
from glow.dequantization import VariationalDequantizer
from glow.divergence import DivergenceGuard
from glow.families import build_model
from glow.masks import MaskSampler
from glow.metrics import EvalMetrics
from glow.module_args import OPTIMIZERS, check_module_arguments, kl_weight
from glow.quantize import preprocess
from glow.schedule import lr_factor


class DensityModule(L.LightningModule):
    def __init__(self, model_config: dict[str, Any], n_bits: int = 8, optimizer: str = "adamax", lr: float = 1e-3,
                 weight_decay: float = 0.0, warmup_steps: int = 500, grad_clip_norm: float | None = 50.0,
                 ema_decay: float | None = None, init_batch_size: int = 256, masks: dict | None = None,
                 seed: int = 0, classifier_weight: float = 0.0, max_nonfinite_steps: int = 20,
                 iw_samples: int = 0, hole_regression_weight: float = 1.0, kl_warmup_steps: int = 0,
                 lr_schedule: str = "constant", dequantization: str = "uniform"):
        super().__init__()
        self.save_hyperparameters()
        self.model: DensityModel = build_model(model_config)  # model_config["family"] picks the class (glow.families)
        check_module_arguments(self.model.capabilities, n_bits, optimizer, lr, weight_decay, warmup_steps,
                               grad_clip_norm, ema_decay, init_batch_size, classifier_weight, max_nonfinite_steps,
                               iw_samples, hole_regression_weight, kl_warmup_steps, lr_schedule, dequantization)
        self.model.n_bits = n_bits  # the model carries its bit depth (before the EMA copy is made)
        self.mask_sampler = MaskSampler(**(masks or {})) if self.model.kind.image else None
        # q(u | x) of variational dequantisation: trained with the model, used for its bound only
        self.dequantizer = VariationalDequantizer(self.model.image_shape) if dequantization == "variational" else None
        self.ema = None
        if ema_decay:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=False)
            self.ema.requires_grad_(False)  # DDP must not wait for gradients of the average
        self.register_buffer("nonfinite_steps", torch.zeros((), dtype=torch.long))
        self._skip_this_step = False
        self._eval_seen = 0  # images of the split evaluated so far in this loop (glow's loaders keep order)
        self._compile_clock: float | None = None  # model.compile=true: when compiling began (the first step)
        self.divergence = DivergenceGuard(max_nonfinite_steps)
        # the run's planned last step (the LR schedule's end): max_steps, or glow.schedule.TimeBudget's estimate
        self.planned_steps: int | None = None
        self.plan_measured = False
        extra = self.model.capabilities.eval_figures
        self.eval_metrics = nn.ModuleDict({"val": EvalMetrics(extra), "test": EvalMetrics(extra)})

    # -- what evaluation and sampling use ---------------------------------------------------
    @property
    def n_bits(self) -> int:
        """The bit depth of the data, carried by the model."""
        return self.model.n_bits

    @property
    def eval_model(self) -> DensityModel:
        """The EMA weights when EMA is on, else the live weights."""
        return self.ema.module if self.ema is not None else self.model

    def noise_generator(self, stream: int, batch_idx: int) -> torch.Generator:
        """Dequantisation noise drawn from (seed, stream, step or batch, rank): a resumed run draws
        exactly the noise an uninterrupted one would, and ranks draw different noise."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        key = ((self.hparams.seed * 7 + stream) * 1_000_003 + batch_idx) * 4099 + rank
        return torch.Generator(device=self.device).manual_seed(key % (2 ** 63))

    def image_generator(self, stream: int, index: int) -> torch.Generator:
        """A CPU generator for one image of a split, from (seed, stream, the image's index)."""
        key = ((self.hparams.seed * 7 + stream) * 2_147_483_659 + index) * 8191 + 1
        return torch.Generator().manual_seed(key % (2 ** 63))

    def model_inputs(self, batch, generator: torch.Generator | None = None) -> ModelInputs:
        """A batch as the model sees it: images, labels, condition and inpainting hole (glow.density).

        The inpainting condition holds the observed pixels at their bin centres, never the dequantised
        values being modelled: otherwise the flow could copy the noise and put unbounded density on the
        observed pixels. Holes are drawn on the CPU from the same key, so they too are reproducible and
        resumable.
        """
        images, labels = batch
        hole_generator = torch.Generator().manual_seed(generator.initial_seed()) if generator is not None else None
        bin_centres = lambda x: preprocess(x, self.n_bits, dequantize=False)  # noqa: E731
        cond, hole = training_condition(self.model.kind, images, labels, self.mask_sampler, bin_centres,
                                        hole_generator)
        return ModelInputs(images, labels, self.n_bits, generator, cond, hole, self.dequantizer)

    def objective_terms(self) -> ObjectiveTerms:
        hp = self.hparams
        return ObjectiveTerms(hp.classifier_weight, hp.hole_regression_weight,
                              kl_weight(self.global_step, hp.kl_warmup_steps))

    # -- data-dependent init ----------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Data-dependent init (once, eager), then the model's own torch.compile option.

        Compiling after the init keeps the one-off data-dependent pass out of the compiled graphs;
        only the live model is compiled (the EMA average stays eager). nn.Module.compile keeps the
        state_dict keys, so the checkpoints are the same as an eager run's.
        """
        self._initialize_model()
        if self.model.compile_if_asked():  # torch.compile works in the first step: say so, then how long it took
            self.print("compiling the model (model.compile=true): the first training step compiles it, "
                       "which can take minutes...")
            self._compile_clock = time.perf_counter()

    def _initialize_model(self) -> None:
        """Once, before the first step, outside autocast, identical on every rank. On resume the
        ``initialized`` buffers come back from the checkpoint and this is a no-op."""
        if self.model.is_initialized:
            return
        inputs = self.model_inputs(self._init_batch())
        x = preprocess(inputs.images, self.n_bits)
        with torch.autocast(device_type=self.device.type, enabled=False):
            self.model.initialize(x, inputs.cond)
        if self.ema is not None:  # the average starts from the initialised weights
            self.ema.module.load_state_dict(self.model.state_dict())

    def _init_batch(self) -> tuple[Tensor, Tensor]:
        images, labels, count = [], [], 0
        for x, y in self.trainer.datamodule.train_dataloader():
            images.append(x)
            labels.append(y)
            count += x.shape[0]
            if count >= self.hparams.init_batch_size:
                break
        n = self.hparams.init_batch_size
        return torch.cat(images)[:n].to(self.device), torch.cat(labels)[:n].to(self.device)

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        generator = self.noise_generator(0, self.global_step)
        terms = self.objective_terms()
        loss, figures = self.model.objective(self.model_inputs(batch, generator), terms)
        if self.hparams.kl_warmup_steps:  # train/loss is the annealed objective until β reaches 1
            self.log("train/kl_weight", terms.kl_weight, on_step=True, on_epoch=False)
        if torch.isfinite(loss):  # a NaN is counted by the guard, never averaged into the logged curve
            for name, value in figures.items():
                self.log(f"train/{name}", value, prog_bar=name in ("bpd", "loss"), on_step=True, on_epoch=False)
        return loss

    def on_train_start(self) -> None:
        self.divergence.snapshot(self, self.trainer.optimizers[0])  # after ActNorm init / restore
        if not self.plan_measured:  # this run's max_steps (a resume may raise it); a time budget's plan is kept
            self.set_plan(self.trainer.max_steps if self.trainer.max_steps > 0 else None, measured=False)

    def set_plan(self, steps: int | None, measured: bool) -> None:
        self.planned_steps, self.plan_measured = (int(steps) if steps else None), measured

    def on_before_optimizer_step(self, optimizer) -> None:
        """Non-finite guard. Gradients are all-reduced (and unscaled) by now, so every rank decides alike.

        Setting the gradients to None makes the optimiser skip every parameter: no weight, moment or
        step-count update. A plain zero gradient would still move Adam's moments.
        """
        grads = [p.grad for p in self.parameters() if p.grad is not None]  # the model's and q(u | x)'s
        finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True
        self._skip_this_step = not finite
        if not finite:
            optimizer.zero_grad(set_to_none=True)
            self.nonfinite_steps += 1
            self.print(f"step {self.global_step}: non-finite loss or gradients, step skipped "
                       f"({int(self.nonfinite_steps)} so far)")
        self.log("train/nonfinite_steps", self.nonfinite_steps.float(), on_step=True, on_epoch=False)
        count = self.nonfinite_steps.clone()
        try:
            message = self.divergence.after_step(self, optimizer, finite)  # may raise Diverged
        finally:
            self.nonfinite_steps.copy_(count)  # a rollback must not rewind the count of skipped steps
        if message:
            self.print(message)
            self.log("train/rollbacks", float(self.divergence.rollbacks), on_step=True, on_epoch=False)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._compile_clock is not None:
            self.print(f"compiled in {time.perf_counter() - self._compile_clock:.1f} s (the first step)")
            self._compile_clock = None
        if self.ema is not None and not self._skip_this_step:
            self.ema.update_parameters(self.model)

    def configure_optimizers(self):
        hp = self.hparams
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # a distillation teacher is frozen
        if self.dequantizer is not None:
            trainable += list(self.dequantizer.parameters())
        optimizer = OPTIMIZERS[hp.optimizer](trainable, lr=hp.lr, weight_decay=hp.weight_decay)
        # warmup, then constant (Glow) or a decay to 0 at the planned last step; the position is checkpointed
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
            step, hp.warmup_steps, hp.get("lr_schedule", "constant"), self.planned_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self._skip_this_step or not self.hparams.grad_clip_norm:
            return
        self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip_norm, gradient_clip_algorithm="norm")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[FORMAT_KEY] = FORMAT_VERSION  # glow.checkpoints reads it back
        checkpoint["step_plan"] = {"planned_steps": self.planned_steps, "measured": self.plan_measured}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        plan = checkpoint.get("step_plan")  # a time budget's plan survives a resume; max_steps is read anew
        if isinstance(plan, dict) and plan.get("measured") is True and isinstance(plan.get("planned_steps"), int) \
                and plan["planned_steps"] > 0:
            self.set_plan(plan["planned_steps"], measured=True)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, batch, batch_idx: int, iw_samples: int = 0) -> dict[str, Tensor]:
        """Per-image figures of an evaluation batch (the EMA weights when on): "bpd" and the family's
        eval_figures. The test, validation and learning-curve figures. Batches come in order from
        batch_idx 0 (the loaders of glow.data), so the batch's place in the split is counted here."""
        if batch_idx == 0:
            self._eval_seen = 0
        first = self._eval_seen
        self._eval_seen = first + batch[0].shape[0]
        return self.eval_model.evaluate(self.eval_inputs(batch, batch_idx, first), iw_samples)

    def eval_inputs(self, batch, batch_idx: int, first: int) -> ModelInputs:
        """An evaluation batch whose dequantisation noise and inpainting hole are drawn per image, from
        the key of the image's index in the split: a figure is the same whatever the evaluation batch
        size or number of ranks (glow.data.samplers.ShardSampler gives rank r the indices r, r + W, ...).
        Draws on the CPU, so any device gives the same figures."""
        images, labels = batch
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self._trainer is not None else (1, 0)
        generators = [self.image_generator(1, (first + i) * world + rank) for i in range(images.shape[0])]
        cpu, log_q = images.cpu(), None
        if self.dequantizer is None:
            x = torch.cat([preprocess(cpu[i:i + 1], self.n_bits, generator=g) for i, g in enumerate(generators)])
        else:  # q(u | x) maps per-image standard-normal draws (glow.dequantization)
            eps = torch.cat([torch.randn((1, *images.shape[1:]), generator=g) for g in generators])
            x, log_q = self.dequantizer.from_noise(images, self.n_bits, eps.to(images.device))
        holes = None
        if self.mask_sampler is not None:
            holes = torch.cat([self.mask_sampler(1, images.shape[-2:], generator=g) for g in generators])
        bin_centres = lambda x: preprocess(x, self.n_bits, dequantize=False)  # noqa: E731
        cond, hole = training_condition(self.model.kind, images, labels, lambda *_, **__: holes.to(images.device),
                                        bin_centres)
        # a family's other draws (a VAE's binarisation and posterior samples) stay per batch
        return ModelInputs(images, labels, self.n_bits, self.noise_generator(1, batch_idx), cond, hole,
                           _x=x.to(images.device), _log_q=log_q)

    def _eval_step(self, stage: str, batch, batch_idx: int) -> None:
        figures = self.evaluate(batch, batch_idx, self.hparams.get("iw_samples", 0) if stage == "test" else 0)
        self.eval_metrics[stage].update(figures.pop("bpd"), extra=figures)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch, batch_idx)

    def _log_eval(self, stage: str) -> None:
        for name, value in self.eval_metrics[stage].compute_and_reset().items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "bpd", sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
