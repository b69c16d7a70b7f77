"""Glow (Kingma & Dhariwal 2018): the multi-scale flow, and its NICE / RealNVP presets.

    x -> [squeeze -> K x (actnorm -> permutation -> coupling) -> split] x (L-1)
      -> squeeze -> K x (actnorm -> permutation -> coupling) -> z_L

    log p(x) = sum_i log p(z_i | h_i) + log p(z_L) + log|det dz/dx|

Each split hands one latent z_i, with a learned conditional prior p(z_i | h_i), to the latent list,
finest first. The coupling networks, priors and zero layers are openai/glow's (glow.flows.nets); each of
their departures can be switched off for ablations (``inner_actnorm``, ``zero_logscale``,
``learn_top_per_position``). Conditioning (``conditional=class|image``, c-Glow's ``conditional_layers``,
``observed_noise`` and ``hole_predictor``) is described in docs/architecture.md.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from glow.density import Capabilities, DensityModel, ModelInputs, ObjectiveTerms
from glow.dequantization import DEQUANTIZATIONS
from glow.encoders import ConditionEncoder, UNetEncoder
from glow.flows.actnorm import DiagonalScale, PixelActNorm, actnorms_initialized, initialize_actnorms
from glow.flows.base import Flow, zeros_logdet
from glow.flows.hole_shift import HoleShift
from glow.flows.memory import MemoryFlowSequence
from glow.flows.nets import freeze_output_logscales
from glow.flows.observed import ObservedAsNoise
from glow.flows.squeeze import Squeeze
from glow.glow_objectives import with_classifier, with_hole_regression
from glow.glow_step import step_layers
from glow.hole_mixture import HoleMixture
from glow.hole_predictor import HolePredictor
from glow.model_args import check_arguments
from glow.priors import Split, TopPrior, gaussian_log_prob, gaussian_sample


def inpaint_routes(kind) -> tuple[str, ...]:
    """An inpainting model samples the hole directly; an unconditional one by MCMC on its latent draws
    (best), in pixel space, or by a MAP fill; a class-conditional one has no route."""
    return ("cglow",) if kind.image else ("latent", "mcmc", "map") if kind.name is None else ()


class Glow(HoleMixture, DensityModel):
    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), levels: int = 3, steps: int = 32,
                 hidden_channels: int = 512, coupling: str = "affine", permutation: str = "conv_lu",
                 mask: str = "channel", actnorm: bool = True, learn_top: bool = True, final_scaling: bool = False,
                 spline_bins: int = 8, spline_tail_bound: float = 3.0, conditional: str | None = None,
                 num_classes: int = 10, cond_channels: int = 32, seed: int = 0, class_head: bool = False,
                 inner_actnorm: bool = True, zero_logscale: bool = True, learn_top_per_position: bool = False,
                 pixel_actnorm: bool = False, affine_scale: str = "sigmoid", cond_encoder: str = "cnn",
                 conditional_layers: bool = False, observed_noise: str | bool = "none", memory: str = "none",
                 compile: bool = False, channels_last: bool = False, hole_predictor: bool = False,
                 prior_log_std_bound: float | None = None, hole_hypotheses: int = 1, hole_features: bool = False,
                 coupling_input_bound: float | None = None):
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3:
            raise ValueError(f"model.image_shape={image_shape!r} is not allowed: use (channels, height, width)")
        super().__init__(image_shape)
        kind = check_arguments(levels, steps, hidden_channels, spline_bins, coupling, permutation, mask, conditional,
                               num_classes, class_head, affine_scale, cond_encoder, conditional_layers,
                               observed_noise, memory, compile, channels_last, hole_predictor, prior_log_std_bound,
                               hole_hypotheses, hole_features, coupling_input_bound)
        c, h, w = image_shape
        if h % 2 ** levels or w % 2 ** levels:
            size = h if h == w else f"{h}x{w}"  # the data's image size (data.image_size, or the data set's own)
            raise ValueError(f"data.image_size={size} is not allowed with model.levels={levels}: height and "
                             f"width must be divisible by 2^levels={2 ** levels} (or change model.levels)")

        self.capabilities = Capabilities(conditioning=kind, inpaint_routes=inpaint_routes(kind),
                                         class_head=class_head, hole_predictor=hole_predictor,
                                         eval_figures=("hole_bpd",) if kind.image else (),
                                         dequantizations=("uniform",) if kind.image else DEQUANTIZATIONS)
        self.num_levels = levels
        classes = kind.num_classes
        encoder = UNetEncoder if cond_encoder == "unet" else ConditionEncoder
        # the encoder sees (masked image, hole) and, with hole_features, a hypothesis of the hole (glow.hole_mixture)
        self.encoder = encoder(c + 1 + c * hole_features, levels, cond_channels) if kind.image else None
        feature_channels = kind.feature_channels(cond_channels)
        # c-Glow: observed pixels become their own dequantisation noise (glow.flows.observed)
        observed_noise = {True: "uniform", False: "none"}.get(observed_noise, observed_noise)
        self.observed = ObservedAsNoise(c, distribution=observed_noise) if observed_noise != "none" else None
        # c-Glow: the hole is modelled as a residual around a prediction from the condition (glow.flows.hole_shift)
        self.hole_predictor = HolePredictor(c, levels, cond_channels, hole_hypotheses) if hole_predictor else None
        self.hole_features = hole_features
        self.hole_shift = HoleShift() if hole_predictor else None
        self.n_bits = 8  # again, now that the observed-pixel layer that shares it exists
        # torch.compile of each level's flow, applied by compile_levels (DensityModule, the benchmark);
        # nn.Module.compile keeps the state_dict keys, so checkpoints load into either kind of model
        self.use_compile = compile

        self.squeeze = Squeeze()
        # not in Glow: a per-pixel ActNorm on the image, for data with near-constant pixels (see PixelActNorm)
        self.pixel_norm = PixelActNorm(image_shape) if pixel_actnorm else None
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        self.latent_shapes: list[tuple[int, int, int]] = []
        channels = c
        for level in range(levels):
            channels, h, w = channels * 4, h // 2, w // 2
            layers: list[Flow] = []
            for step in range(steps):
                layers += step_layers(channels, step, hidden_channels, coupling, mask, actnorm, permutation,
                                      conditional_layers, feature_channels, seed=seed + 1000 * level + step,
                                      spline_bins=spline_bins, spline_tail_bound=spline_tail_bound,
                                      inner_actnorm=inner_actnorm, affine_scale=affine_scale,
                                      input_bound=coupling_input_bound)
            layers_per_step = len(layers) // steps  # the unit model.memory=checkpoint wraps
            if level == levels - 1:
                if final_scaling:
                    layers.append(DiagonalScale((channels, h, w)))
                self.latent_shapes.append((channels, h, w))
            else:
                split = Split(channels, classes, feature_channels, prior_log_std_bound)
                self.splits.append(split)
                self.latent_shapes.append((split.factored, h, w))
                channels = split.kept
            self.levels.append(MemoryFlowSequence(layers, memory, step_size=layers_per_step))
        self.top_prior = TopPrior((channels, h, w), learn_top, classes, feature_channels, learn_top_per_position,
                                  prior_log_std_bound)
        # Glow's ycond classifier: logits from the spatially averaged top latent (not part of log_prob)
        self.class_head = nn.Linear(channels, classes) if class_head else None
        if self.class_head is not None:  # zero-init, as Glow's linear_zeros: uniform logits at the start
            nn.init.zeros_(self.class_head.weight)
            nn.init.zeros_(self.class_head.bias)
        if not zero_logscale:
            freeze_output_logscales(self)
        # NHWC activations and conv weights (oneDNN's preferred layout on CPU; docs/performance.md)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def compile_levels(self) -> None:
        """torch.compile each level's flow in place (state_dict keys unchanged)."""
        for level in self.levels:
            level.compile()

    def compile_if_asked(self) -> bool:
        return self.use_compile and not self.compile_levels()  # compile_levels returns None: True once compiled

    @property
    def anchor(self) -> Tensor:
        return self.top_prior.anchor

    @property
    def n_bits(self) -> int:
        return self._n_bits

    @n_bits.setter
    def n_bits(self, value: int) -> None:
        self._n_bits = int(value)
        if getattr(self, "observed", None) is not None:  # its bin width is the model's
            self.observed.n_bits = int(value)

    # -- the flow ---------------------------------------------------------------------------
    def _encode(self, x: Tensor, cond: Tensor | None, priors: list | None = None, component: Tensor | None = None,
                predictions: tuple[Tensor, Tensor] | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        """(latents, logdet, log prior); ``priors``, when given, receives each latent's (mean, log_std).
        ``component`` and ``predictions``: the hole mixture's component [B] and the predictor's output
        (glow.hole_mixture; None: the most likely component, predicted here)."""
        encoder_input, shift = self._hole_inputs(cond, component, predictions)
        features, labels = self.kind.route(encoder_input, self.encoder, self.num_levels)
        zs, logdet, log_prior = [], zeros_logdet(x), zeros_logdet(x)
        h = x.contiguous(memory_format=self.memory_format)
        if self.observed is not None:
            h, logdet = self.observed(h, cond)
        if shift is not None:
            h, _ = self.hole_shift(h, shift)
        if self.pixel_norm is not None:
            h, pixel_logdet = self.pixel_norm(h)
            logdet = logdet + pixel_logdet
        for level, flow in enumerate(self.levels):
            h, _ = self.squeeze(h)
            h, step_logdet = flow(h, features[level])
            logdet = logdet + step_logdet
            if level < self.num_levels - 1:
                split = self.splits[level]
                h, z = split.split(h)
                params = split.prior.params(h, labels, features[level])
                log_prior = log_prior + gaussian_log_prob(z, *params)
                zs.append(z)
                if priors is not None:
                    priors.append(params)
        zs.append(h)
        params = self.top_prior.params(h.shape[0], labels, features[-1])
        log_prior = log_prior + gaussian_log_prob(h, *params)
        if priors is not None:
            priors.append(params)
        return zs, logdet, log_prior

    def encode(self, x: Tensor, cond: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """x -> (one latent per level, finest first; log|det d(zs)/dx| of shape [B])."""
        zs, logdet, _ = self._encode(x, cond)
        return zs, logdet

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Natural-log density of x, shape [B] (a c-Glow with K > 1 hole hypotheses: their exact mixture)."""
        if self.hole_hypotheses > 1:
            return self._mixture_log_prob(x, cond)
        _, logdet, log_prior = self._encode(x, cond)
        return log_prior + logdet

    def objective(self, inputs: ModelInputs, terms: ObjectiveTerms) -> tuple[Tensor, dict[str, Tensor]]:
        """bits/dim, plus the class head's or the hole predictor's term when the model has one (glow_objectives)."""
        if self.class_head is not None and terms.classifier_weight:
            return with_classifier(self, inputs, terms.classifier_weight)
        if self.hole_predictor is not None:
            return with_hole_regression(self, inputs, terms.hole_regression_weight)
        return super().objective(inputs, terms)

    def class_logits(self, top: Tensor) -> Tensor:
        """Class logits [B, num_classes] of the classification head from the top latent z_L [B, C, h, w]."""
        if self.class_head is None:
            raise ValueError("this Glow has no classification head: build it with class_head=True")
        return self.class_head(top.mean(dim=(2, 3)).to(self.class_head.weight.dtype))

    def log_prob_and_logits(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``log_prob(x, cond)`` and the class head's logits (None without a head) from one pass."""
        zs, logdet, log_prior = self._encode(x, cond)
        return log_prior + logdet, (self.class_logits(zs[-1]) if self.class_head is not None else None)

    def _decode(self, top: Tensor, latent_for_split: Callable[[int, Tensor, Tensor | None], Tensor],
                features: list[Tensor | None], cond: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
        h = top
        for level in reversed(range(self.num_levels)):
            if level < self.num_levels - 1:
                h = self.splits[level].merge(h, latent_for_split(level, h, features[level]))
            h, _ = self.levels[level].inverse(h, features[level])
            h, _ = self.squeeze.inverse(h)
        if self.pixel_norm is not None:
            h, _ = self.pixel_norm.inverse(h)
        if shift is not None:
            h, _ = self.hole_shift.inverse(h, shift)
        if self.observed is not None:
            h, _ = self.observed.inverse(h, cond)
        return h

    def decode(self, zs: Sequence[Tensor], cond: Tensor | None = None) -> Tensor:
        """Exact inverse of ``encode``: every latent is used as given, none resampled."""
        if len(zs) != self.num_levels:
            raise ValueError(f"decode needs {self.num_levels} latents (one per level), got {len(zs)}")
        encoder_input, shift = self._hole_inputs(cond)
        features, _ = self.kind.route(encoder_input, self.encoder, self.num_levels)
        return self._decode(zs[-1], lambda level, kept, feats: zs[level], features, cond, shift)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, cond: Tensor | None = None,
               noise: Sequence[Tensor] | None = None) -> Tensor:
        """n images at ``temperature`` (the std of every prior is multiplied by it).

        ``noise`` optionally fixes the standard-normal draws, one tensor per latent shaped like
        ``latent_shapes`` (finest first), e.g. to show the same sample at several temperatures.
        """
        if noise is None:
            device = self.top_prior.anchor.device
            noise = [torch.randn(n, *shape, device=device) for shape in self.latent_shapes]
        return self.decode_noise(noise, temperature, cond)

    def encode_noise(self, x: Tensor, cond: Tensor | None = None, temperature: float = 1.0) -> list[Tensor]:
        """The standard-normal draws that ``decode_noise`` (and ``sample``) maps to x: each latent
        standardised by its prior, (z_i - mean_i(h_i)) / (T * std_i(h_i)). Exact inverse of decode_noise."""
        priors: list[tuple[Tensor, Tensor]] = []
        zs, _, _ = self._encode(x, cond, priors)
        return [(z - mean.to(z.dtype)) / (temperature * torch.exp(log_std.to(z.dtype)))
                for z, (mean, log_std) in zip(zs, priors)]

    def decode_noise(self, noise: Sequence[Tensor], temperature: float = 1.0, cond: Tensor | None = None,
                     component: Tensor | None = None) -> Tensor:
        """The image of standard-normal draws (one per latent, finest first) at ``temperature``.
        Differentiable (``sample`` is this under no_grad): the latent-space inpainting sampler
        (glow.sampling.latent) runs MCMC on these draws, whose prior is N(0, I) for any Glow."""
        n = noise[-1].shape[0]
        if component is None and self.hole_hypotheses > 1:  # a c-Glow's hole mixture: k ~ pi(c) per sample
            component = self.sample_components(cond)
        encoder_input, shift = self._hole_inputs(cond, component)
        features, labels = self.kind.route(encoder_input, self.encoder, self.num_levels)
        top = gaussian_sample(*self.top_prior.params(n, labels, features[-1]), temperature, noise[-1])

        def split_latent(level: int, kept: Tensor, feats: Tensor | None) -> Tensor:
            return gaussian_sample(*self.splits[level].prior.params(kept, labels, feats), temperature, noise[level])

        return self._decode(top, split_latent, features, cond, shift)

    @torch.no_grad()
    def initialize(self, x: Tensor, cond: Tensor | None = None) -> bool:
        """Data-dependent ActNorm init on an init batch; a no-op once done. Returns whether it ran.

        Runs outside autocast. Under torch.distributed each ActNorm all-reduces its statistics, so every
        rank must call this with its own batch, and all end with identical parameters.
        """
        return initialize_actnorms(self, x, lambda x: self.log_prob(x, cond))

    @property
    def is_initialized(self) -> bool:
        return actnorms_initialized(self)
