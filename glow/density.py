"""The one interface every model family implements: ``DensityModel``.

The training module (glow.module), sample.py, the evaluate scripts and the web page talk to a model
only through these members, and ask ``capabilities`` before they ask for anything optional; they
never probe with hasattr. A family that cannot do something says so in one line
(``UnsupportedError``) instead of failing on a missing attribute.

    capabilities                  what it can do: its conditioning, latent code, density, inpainting
                                  routes, optional training terms and evaluation figures
    image_shape, num_dims, n_bits the data it models (n_bits: the bit depth it was trained on)
    latent_shapes                 the shapes of its standard-normal draws, one per latent, finest first
    log_prob(x, cond)             log-density of dequantised images x in [-0.5, 0.5), nats [B]
    objective(inputs, terms)      the training loss (a scalar) and what to log
    evaluate(inputs, iw_samples)  per-image figures: "bpd" and the names in capabilities.eval_figures
    sample(n, temperature, ...)   images at a temperature (every prior's std times T)
    encode(x, cond), decode(zs)   the latent code (exact or approximate: capabilities.latent_code)
    initialize(x, cond)           data-dependent initialisation on an init batch (once; a no-op after)

Adding a family: subclass DensityModel, set ``self.capabilities`` in ``__init__``, implement what it
can do, and register it in glow/families.py (docs/architecture.md, "Where to add").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from glow.conditioning import Kind
from glow.errors import UnsupportedError
from glow.quantize import bits_per_dim, preprocess

LATENT_CODES = ("exact", "approximate", "none")
DENSITIES = ("exact", "bound")


@dataclass(frozen=True)
class Capabilities:
    """What a model can do; callers ask these, never the model's attributes."""

    conditioning: Kind = Kind(None)
    # "exact": decode(encode(x)) == x (flows); "approximate": posterior mean / decoder mean (VAE)
    latent_code: str = "exact"
    # "exact": log_prob is the model's log-density; "bound": only evaluate() gives a bound (VAE)
    density: str = "exact"
    # inpainting routes (glow.sampling.routes) this model supports; the first is what method=auto takes
    inpaint_routes: tuple[str, ...] = ()
    class_head: bool = False      # module.classifier_weight can train a classification head
    hole_predictor: bool = False  # module.hole_regression_weight trains a hole predictor mu(c)
    kl_term: bool = False         # module.kl_warmup_steps can anneal a KL term
    # module.dequantization values it is trained and evaluated with (glow.dequantization)
    dequantizations: tuple[str, ...] = ("uniform",)
    eval_figures: tuple[str, ...] = field(default=())  # evaluate()'s figures beyond "bpd"

    def __post_init__(self):
        if self.latent_code not in LATENT_CODES or self.density not in DENSITIES:
            raise ValueError(f"Capabilities: latent_code in {LATENT_CODES}, density in {DENSITIES}")

    @property
    def samples_from_nothing(self) -> bool:
        """Whether it samples without a masked image to complete (an inpainting model does not)."""
        return not self.conditioning.image


@dataclass(frozen=True)
class ObjectiveTerms:
    """The training objective's optional terms (module.*); a family uses the ones it has."""

    classifier_weight: float = 0.0      # Glow with a class head: bits/dim + weight * class bits
    hole_regression_weight: float = 1.0  # c-Glow with a hole predictor: + weight * its squared error
    kl_weight: float = 1.0               # VAE: the KL part's weight (KL warm-up from 0 to 1)


Dequantizer = Callable[[Tensor, int, "torch.Generator | None"], "tuple[Tensor, Tensor]"]


@dataclass
class ModelInputs:
    """One batch as a model sees it. ``x`` (the dequantised images) is drawn on first use, from
    ``generator``, so a family that never reads it (the VAE binarises ``images``) draws nothing.
    With a ``dequantizer`` (glow.dequantization.VariationalDequantizer) the noise comes from q(u | x),
    and ``bound`` subtracts its log q(u | x) from a log-density."""

    images: Tensor                          # uint8 [B, C, H, W]
    labels: Tensor
    n_bits: int
    generator: torch.Generator | None = None
    cond: Tensor | None = None              # labels, or an inpainting condition (glow.conditioning)
    hole: Tensor | None = None              # the inpainting mask of an image-conditional batch
    dequantizer: Dequantizer | None = None  # None: uniform noise (glow.quantize.preprocess)
    _x: Tensor | None = field(default=None, repr=False)
    _log_q: Tensor | None = field(default=None, repr=False)

    @property
    def x(self) -> Tensor:
        if self._x is None:
            if self.dequantizer is None:
                self._x = preprocess(self.images, self.n_bits, generator=self.generator)
            else:
                self._x, self._log_q = self.dequantizer(self.images, self.n_bits, self.generator)
        return self._x

    def bound(self, log_prob: Tensor) -> Tensor:
        """log p(x) - log q(u | x) of the dequantised batch: the log-density itself with uniform noise
        (log q = 0), else the variational bound's integrand (glow.dequantization)."""
        self.x  # noqa: B018 -- draws the noise (and log q) if not drawn yet
        return log_prob if self._log_q is None else log_prob - self._log_q.to(log_prob.dtype)


class DensityModel(nn.Module):
    """Base of every model family (module docstring). Subclasses set ``capabilities`` and
    ``latent_shapes`` in ``__init__`` and override what they can do."""

    capabilities: Capabilities
    latent_shapes: list[tuple[int, ...]]

    def __init__(self, image_shape: Sequence[int]):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_dims = math.prod(self.image_shape)
        self.n_bits = 8  # the bit depth of its data: the training module and glow.sampling.load set it

    @property
    def kind(self) -> Kind:
        """Its conditioning: nothing, class labels or a masked image (glow.conditioning)."""
        return self.capabilities.conditioning

    @property
    def family(self) -> str:
        return type(self).__name__

    @property
    def anchor(self) -> Tensor:
        """A tensor on the model's device, in its dtype."""
        return next(self.parameters())

    def unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"this checkpoint's model ({self.family}) cannot {what}")

    # -- density and training ------------------------------------------------------------------
    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        raise self.unsupported("give an exact log-density (its evaluate() reports a bound)")

    def objective(self, inputs: ModelInputs, terms: ObjectiveTerms) -> tuple[Tensor, dict[str, Tensor]]:
        """(scalar loss, figures to log): by default the mean bits/dim of the dequantised batch."""
        bpd = bits_per_dim(inputs.bound(self.log_prob(inputs.x, inputs.cond)), self.num_dims, inputs.n_bits)
        bpd = bpd.mean().float()
        return bpd, {"bpd": bpd}

    def evaluate(self, inputs: ModelInputs, iw_samples: int = 0) -> dict[str, Tensor]:
        """Per-image figures [B]: "bpd", and "hole_bpd" for an inpainting batch: all of
        -log2 p(x | x_obs) charged to the missing dimensions. The observed pixels are given (at bin
        resolution) by the condition, so a good model spends ~0 bits on them and the bound is tight."""
        bpd = bits_per_dim(inputs.bound(self.log_prob(inputs.x, inputs.cond)), self.num_dims, inputs.n_bits)
        figures = {"bpd": bpd}
        if inputs.hole is not None:
            missing_dims = (inputs.hole.flatten(1).sum(1) * self.image_shape[0]).clamp_min(1)
            figures["hole_bpd"] = bpd * self.num_dims / missing_dims
        return figures

    def final_results(self, results: dict) -> dict:
        """Figures to add to results.json after the test (distillation: its sampling speed-up)."""
        return {}

    @torch.no_grad()
    def initialize(self, x: Tensor, cond: Tensor | None = None) -> bool:
        """Data-dependent init on an init batch; returns whether it ran (a no-op once done)."""
        return False

    @property
    def is_initialized(self) -> bool:
        return True

    def compile_if_asked(self) -> bool:
        """torch.compile what the model's own ``compile`` option asks for (Glow: each level); True if it did
        (the training module then says so, and how long the first, compiling, step took)."""
        return False

    # -- sampling and the latent code ----------------------------------------------------------
    def sample(self, n: int, temperature: float = 1.0, cond: Tensor | None = None,
               noise: Sequence[Tensor] | None = None) -> Tensor:
        raise self.unsupported("sample")

    def encode(self, x: Tensor, cond: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        raise self.unsupported("encode images")

    def decode(self, zs: Sequence[Tensor], cond: Tensor | None = None) -> Tensor:
        raise self.unsupported("decode latents")
