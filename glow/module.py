"""The LightningModule: bits/dim loss, data-dependent init, optimiser + warmup, EMA, non-finite guard.

The model's kwargs are saved as plain hyper-parameters, so any checkpoint rebuilds its Glow with
``glow.sampling.load`` and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanMetric, SumMetric

from glow.conditioning import training_condition
from glow.divergence import DivergenceGuard
from glow.masks import MaskSampler
from glow.families import build_model
from glow.model import Glow
from glow.quantize import bits_per_dim, check_n_bits, preprocess

OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamw": torch.optim.AdamW}


class GlowModule(L.LightningModule):
    def __init__(self, model_config: dict[str, Any], n_bits: int = 8, optimizer: str = "adamax", lr: float = 1e-3,
                 weight_decay: float = 0.0, warmup_steps: int = 500, grad_clip_norm: float | None = 50.0,
                 ema_decay: float | None = None, init_batch_size: int = 256, masks: dict | None = None,
                 seed: int = 0, classifier_weight: float = 0.0, max_nonfinite_steps: int = 20,
                 iw_samples: int = 0, hole_regression_weight: float = 1.0, kl_warmup_steps: int = 0):
        super().__init__()
        check_n_bits(n_bits)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"module.optimizer={optimizer!r} is not allowed: use one of {', '.join(OPTIMIZERS)}")
        self.save_hyperparameters()
        self.model = build_model(model_config)  # model_config["family"] picks the class (glow.families)
        if isinstance(classifier_weight, bool) or not isinstance(classifier_weight, (int, float)) \
                or classifier_weight < 0 or (classifier_weight > 0 and self.model.class_head is None):
            raise ValueError(f"module.classifier_weight={classifier_weight!r} is not allowed: use a number >= 0, "
                             f"and > 0 only with model.class_head=true (and model.conditional=class)")
        if isinstance(hole_regression_weight, bool) or not isinstance(hole_regression_weight, (int, float)) \
                or not hole_regression_weight > 0:
            raise ValueError(f"module.hole_regression_weight={hole_regression_weight!r} is not allowed: use a number "
                             f"> 0 (with model.hole_predictor=true it is the predictor's only training signal)")
        if isinstance(kl_warmup_steps, bool) or not isinstance(kl_warmup_steps, int) or kl_warmup_steps < 0 \
                or (kl_warmup_steps > 0 and not getattr(self.model, "has_kl_term", False)):
            raise ValueError(f"module.kl_warmup_steps={kl_warmup_steps!r} is not allowed: use an integer >= 0, "
                             f"and > 0 only with model.family=vae")
        self.model.n_bits = n_bits  # the model carries its bit depth (before the EMA copy is made)
        self.num_dims = self.model.num_dims
        self.mask_sampler = MaskSampler(**(masks or {})) if self.model.kind.image else None
        self.ema = None
        if ema_decay:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=False)
            self.ema.requires_grad_(False)  # DDP must not wait for gradients of the average
        self.register_buffer("nonfinite_steps", torch.zeros((), dtype=torch.long))
        self._skip_this_step = False
        self.divergence = DivergenceGuard(max_nonfinite_steps)
        extra = getattr(self.model, "eval_figures", ())  # a family's figures beyond bits/dim (glow.families)
        self.eval_metrics = nn.ModuleDict({"val": EvalMetrics(extra), "test": EvalMetrics(extra)})

    # -- what evaluation and sampling use ---------------------------------------------------
    @property
    def n_bits(self) -> int:
        """The bit depth of the data, carried by the model."""
        return self.model.n_bits

    @property
    def eval_model(self) -> Glow:
        """The EMA weights when EMA is on, else the live weights."""
        return self.ema.module if self.ema is not None else self.model

    def condition(self, images: Tensor, labels: Tensor, model: Glow | None = None,
                  generator: torch.Generator | None = None):
        """What the model is conditioned on: labels, or (masked image, mask). Returns (cond, mask).

        The inpainting condition holds the observed pixels at their bin centres, never the
        dequantised values being modelled: otherwise the flow could copy the noise and put unbounded
        density on the observed pixels.
        """
        model = model or self.model
        bin_centres = lambda x: preprocess(x, self.n_bits, dequantize=False)  # noqa: E731
        return training_condition(model.kind, images, labels, self.mask_sampler, bin_centres, generator)

    def noise_generator(self, stream: int, batch_idx: int) -> torch.Generator:
        """Dequantisation noise drawn from (seed, stream, step or batch, rank): a resumed run draws
        exactly the noise an uninterrupted one would, and ranks draw different noise."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        key = ((self.hparams.seed * 7 + stream) * 1_000_003 + batch_idx) * 4099 + rank
        return torch.Generator(device=self.device).manual_seed(key % (2 ** 63))

    def model_inputs(self, batch, model: Glow, generator: torch.Generator | None = None):
        """(dequantised images, condition, inpainting mask or None) of a batch."""
        images, labels = batch
        x = preprocess(images, self.n_bits, generator=generator)
        # masks are drawn on the CPU from the same key, so they too are reproducible and resumable
        mask_generator = torch.Generator().manual_seed(generator.initial_seed()) if generator is not None else None
        cond, mask = self.condition(images, labels, model, mask_generator)
        return x, cond, mask

    def bpd(self, batch, model: Glow, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """Per-sample bits/dim of the dequantised images, and the inpainting mask (or None)."""
        x, cond, mask = self.model_inputs(batch, model, generator)
        return bits_per_dim(model.log_prob(x, cond), self.num_dims, self.n_bits), mask

    # -- data-dependent init ----------------------------------------------------------------
    def on_fit_start(self) -> None:
        """ActNorm init (once, eager), then model.compile's torch.compile of each level.

        Compiling after the init keeps the one-off data-dependent pass out of the compiled graphs;
        only the live model is compiled (the EMA average stays eager). nn.Module.compile keeps the
        state_dict keys, so the checkpoints are the same as an eager run's.
        """
        self._initialize_actnorm()
        if getattr(self.model, "use_compile", False):  # model.compile is a Glow option
            self.model.compile_levels()

    def _initialize_actnorm(self) -> None:
        """Once, before the first step, outside autocast, identical on every rank. On resume the
        ``initialized`` buffers come back from the checkpoint and this is a no-op."""
        if self.model.is_initialized:
            return
        images, labels = self._init_batch()
        images, labels = images.to(self.device), labels.to(self.device)
        x = preprocess(images, self.n_bits)
        cond, _ = self.condition(images, labels)
        with torch.autocast(device_type=self.device.type, enabled=False):
            self.model.initialize(x, cond)
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
        return torch.cat(images)[:n], torch.cat(labels)[:n]

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        generator = self.noise_generator(0, self.global_step)
        if hasattr(self.model, "objective"):  # a family with its own loss (VAE: -ELBO; distillation: KL)
            extra = {}
            if self.hparams.get("kl_warmup_steps"):
                # KL warm-up (Rezende & Mohamed 2015; van den Berg et al. 2018): β rises linearly from
                # 1/steps to 1, so train/loss is the annealed objective until then, not yet the -ELBO
                extra["kl_weight"] = min(1.0, (self.global_step + 1) / self.hparams.kl_warmup_steps)
                self.log("train/kl_weight", extra["kl_weight"], on_step=True, on_epoch=False)
            loss = self.model.objective(batch[0], self.n_bits, generator, **extra).mean().float()
            if torch.isfinite(loss):
                self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
            return loss
        if self.hparams.classifier_weight and self.model.class_head is not None:
            return self._training_step_with_classifier(batch, generator)
        if getattr(self.model, "hole_predictor", None) is not None:
            return self._training_step_with_hole_regression(batch, generator)
        bpd, _ = self.bpd(batch, self.model, generator)
        loss = bpd.mean().float()
        if torch.isfinite(loss):  # a NaN is counted below, never averaged into the logged curve
            self.log("train/bpd", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _training_step_with_classifier(self, batch, generator: torch.Generator) -> Tensor:
        """bits/dim + classifier_weight * cross-entropy of the class head in bits per image (Glow's
        ``bits_x + weight_y * bits_y``), from one pass. log_prob and the reported bits/dim are unchanged."""
        images, labels = batch
        x = preprocess(images, self.n_bits, generator=generator)
        cond, _ = self.condition(images, labels)
        log_prob, logits = self.model.log_prob_and_logits(x, cond)
        bpd = bits_per_dim(log_prob, self.num_dims, self.n_bits).mean().float()
        class_bits = torch.nn.functional.cross_entropy(logits.float(), labels) / math.log(2.0)
        loss = bpd + self.hparams.classifier_weight * class_bits
        if torch.isfinite(loss):
            self.log("train/bpd", bpd, prog_bar=True, on_step=True, on_epoch=False)
            self.log("train/class_bits", class_bits, on_step=True, on_epoch=False)
            self.log("train/class_acc", (logits.argmax(1) == labels).float().mean(), on_step=True, on_epoch=False)
        return loss

    def _training_step_with_hole_regression(self, batch, generator: torch.Generator) -> Tensor:
        """bits/dim + hole_regression_weight * the hole predictor's mean squared error over the hole, in
        model space, from one pass. The squared error is the predictor's only training signal (the flow
        sees mu(c) with its gradient stopped; glow.hole_predictor); log_prob and the reported bits/dim
        are unchanged."""
        x, cond, hole = self.model_inputs(batch, self.model, generator)
        log_prob, prediction = self.model.log_prob_and_hole_prediction(x, cond)
        bpd = bits_per_dim(log_prob, self.num_dims, self.n_bits).mean().float()
        hole = hole.to(x.dtype).expand_as(x)
        mse = (((prediction.float() - x.float()) ** 2) * hole).sum() / hole.sum().clamp(min=1)
        loss = bpd + self.hparams.hole_regression_weight * mse
        if torch.isfinite(loss):
            self.log("train/bpd", bpd, prog_bar=True, on_step=True, on_epoch=False)
            self.log("train/hole_mse", mse, on_step=True, on_epoch=False)
        return loss

    def on_train_start(self) -> None:
        self.divergence.snapshot(self, self.trainer.optimizers[0])  # after ActNorm init / restore

    def on_before_optimizer_step(self, optimizer) -> None:
        """Non-finite guard. Gradients are all-reduced (and unscaled) by now, so every rank decides alike.

        Setting the gradients to None makes the optimiser skip every parameter: no weight, moment or
        step-count update. A plain zero gradient would still move Adam's moments.
        """
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
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
        if self.ema is not None and not self._skip_this_step:
            self.ema.update_parameters(self.model)

    def configure_optimizers(self):
        hp = self.hparams
        trainable = [p for p in self.model.parameters() if p.requires_grad]  # a distillation teacher is frozen
        optimizer = OPTIMIZERS[hp.optimizer](trainable, lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = max(1, hp.warmup_steps)
        # linear warmup from lr/warmup to lr, then constant (Glow); the position is checkpointed
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self._skip_this_step or not self.hparams.grad_clip_norm:
            return
        self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip_norm, gradient_clip_algorithm="norm")

    # -- evaluation -------------------------------------------------------------------------
    def _eval_step(self, stage: str, batch, batch_idx: int) -> None:
        if hasattr(self.eval_model, "evaluate"):  # a family's own figures: "bpd" and its eval_figures
            iw_samples = self.hparams.get("iw_samples", 0) if stage == "test" else 0
            figures = self.eval_model.evaluate(batch[0], self.n_bits, self.noise_generator(1, batch_idx), iw_samples)
            self.eval_metrics[stage].update(figures.pop("bpd"), extra=figures)
            return
        bpd, mask = self.bpd(batch, self.eval_model, self.noise_generator(1, batch_idx))
        hole_bpd = None
        if mask is not None:
            # Bits per missing dimension: all of -log2 p(x | x_obs) charged to the hole. The observed
            # pixels are given (at bin resolution) by the condition, so a good model spends ~0 bits
            # on them and this upper bound becomes tight.
            missing_dims = (mask.flatten(1).sum(1) * batch[0].shape[1]).clamp_min(1)
            hole_bpd = bpd * self.num_dims / missing_dims
        self.eval_metrics[stage].update(bpd, hole_bpd)

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


class EvalMetrics(nn.Module):
    """One evaluation stage's figures. torchmetrics syncs their sums and counts across ranks at
    compute time; the data module's shards do not overlap, so every image counts exactly once.
    NaNs are kept (nan_strategy="disable"), never averaged away, and counted in ``nonfinite``."""

    def __init__(self, extra: tuple[str, ...] = ()):
        super().__init__()
        self.extra = nn.ModuleDict({name: MeanMetric(nan_strategy="disable") for name in extra})
        self.bpd = MeanMetric(nan_strategy="disable")
        self.hole_bpd = MeanMetric(nan_strategy="disable")
        self.nonfinite = SumMetric(nan_strategy="disable")
        self.images = SumMetric()

    def update(self, bpd: Tensor, hole_bpd: Tensor | None = None, extra: dict[str, Tensor] | None = None) -> None:
        for name, value in (extra or {}).items():
            self.extra[name].update(value.float())
        self.bpd.update(bpd.float())
        self.nonfinite.update((~torch.isfinite(bpd)).sum().float())
        self.images.update(float(bpd.shape[0]))
        if hole_bpd is not None:
            self.hole_bpd.update(hole_bpd.float())

    def compute_and_reset(self) -> dict[str, Tensor]:
        figures = {"bpd": self.bpd.compute(), "nonfinite": self.nonfinite.compute(), "images": self.images.compute()}
        if self.hole_bpd.update_count:
            figures["hole_bpd"] = self.hole_bpd.compute()
        figures.update({name: m.compute() for name, m in self.extra.items() if m.update_count})
        for metric in (self.bpd, self.hole_bpd, self.nonfinite, self.images, *self.extra.values()):
            metric.reset()
        return figures
