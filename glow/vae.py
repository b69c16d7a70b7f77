"""A VAE on dynamically binarised images with a flow posterior (Rezende & Mohamed 2015; Kingma et al.
2016; van den Berg et al. 2018): planar, radial, Sylvester (orthogonal, Householder, triangular) or IAF.

    q(z_K | x):  z_0 = μ(x) + σ(x) ε,  z_K = f_K ∘ ... ∘ f_1(z_0; h(x)),
                 log q(z_K | x) = log N(z_0; μ, σ²) - Σ_k log|det ∂f_k/∂z_{k-1}|
    -ELBO(x) = -E_q[log p(x | z_K) + log N(z_K; 0, I) - log q(z_K | x)]          (nats per image)
    NLL_IW(x) = -log (1/k) Σ_j p(x, z^j) / q(z^j | x),  z^j ~ q(· | x)           (Burda et al. 2016)

Every flow's parameters are amortised from the encoder's last hidden layer h(x) (the flows' ``cond``),
as in van den Berg et al. With ``centered_flow`` (not in the papers) the flows act on the offset from the
posterior's mean, z_K = μ(x) + f_K ∘ ... ∘ f_1(σ(x) ε; h(x)): the translation by μ(x) has log|det| = 0,
so log q is the same formula. Why: the posterior sits at ||μ|| of several units, where a planar layer's
tanh(wᵀz + b) saturates into a plain shift and a radial layer centred near 0 barely acts (docs/families.md, "VAE
with flow posteriors"); centred, b = 0 and z₀ = 0 put them on the posterior itself.

Training may anneal the KL part, -E_q[log p(x | z_K)] + β E_q[log q - log p(z_K)]
with β from 0 to 1 (module.kl_warmup_steps, as both papers do); evaluation always uses β = 1. The decoder is Bernoulli. Pixels are binarised afresh in every training batch
(x ~ Bernoulli(pixel / 255), "dynamic binarisation"); evaluation draws them from the batch's fixed
noise generator, so a test figure is reproducible. Bits/dim here are per binary pixel: -log2 p(x) / D.

Encoder and decoder are two-hidden-layer MLPs (ELU), small enough for a CPU; the papers' gated conv
nets reach lower ELBOs. The family interface (docs/architecture.md): ``objective``, ``evaluate``,
``sample``, ``encode``/``decode`` (posterior mean; decoder means, so reconstructions are approximate),
``initialize`` (nothing to do).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glow.density import Capabilities, DensityModel, ModelInputs, ObjectiveTerms
from glow.flows.base import Flow, FlowSequence
from glow.flows.iaf import IAF
from glow.flows.made import orders
from glow.flows.planar import Planar
from glow.flows.radial import Radial
from glow.flows.sylvester import Sylvester

POSTERIORS = ("none", "planar", "radial", "sylvester_o", "sylvester_h", "sylvester_t", "iaf")
IW_CHUNK = 16384  # (image, sample) pairs per pass of the importance-weighted bound


def check_arguments(posterior, latent_dim, hidden, flow_length, sylvester_columns, householder, iaf_hidden,
                    centered_flow, **_) -> None:
    """The VAE's argument checks (its defaults are the constructor's; glow.families.check fills them in)."""
    if posterior not in POSTERIORS:
        raise ValueError(f"model.posterior={posterior!r} is not allowed: use one of {', '.join(POSTERIORS)}")
    if not isinstance(centered_flow, bool):
        raise ValueError(f"model.centered_flow={centered_flow!r} is not allowed: use true or false")
    for name, value in [("latent_dim", latent_dim), ("hidden", hidden), ("sylvester_columns", sylvester_columns),
                        ("householder", householder), ("iaf_hidden", iaf_hidden)]:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"model.{name}={value!r} is not allowed: use a positive integer")
    if not isinstance(flow_length, int) or isinstance(flow_length, bool) or flow_length < 0:
        raise ValueError(f"model.flow_length={flow_length!r} is not allowed: use an integer >= 0")
    if posterior == "sylvester_o" and sylvester_columns > latent_dim:
        raise ValueError(f"model.sylvester_columns={sylvester_columns!r} is not allowed: use 1..latent_dim={latent_dim}")
    if posterior == "iaf" and latent_dim < 2:
        raise ValueError(f"model.latent_dim={latent_dim!r} is not allowed with posterior=iaf: use >= 2")


def posterior_flow(posterior: str, latent: int, hidden: int, length: int, sylvester_columns: int,
                   householder: int, iaf_hidden: int, seed: int) -> FlowSequence:
    """``length`` layers of the posterior's kind, their parameters amortised from h (cond_dim=hidden)."""
    if posterior == "none":
        return FlowSequence([])
    layers: list[Flow] = []
    for k, order in enumerate(orders(latent, length, "alternating", seed) if posterior == "iaf" else [None] * length):
        layers.append({
            "planar": lambda: Planar(latent, hidden),
            "radial": lambda: Radial(latent, hidden),
            "sylvester_o": lambda: Sylvester(latent, hidden, "orthogonal", num_columns=sylvester_columns),
            "sylvester_h": lambda: Sylvester(latent, hidden, "householder", householder=householder),
            "sylvester_t": lambda: Sylvester(latent, hidden, "triangular", flip=k % 2 == 1),
            "iaf": lambda: IAF(latent, iaf_hidden, order, cond_dim=hidden),
        }[posterior]())
    return FlowSequence(layers)


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ELU()]
    return nn.Sequential(*layers)


def binarize(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """uint8 pixels -> {0, 1} with P(1) = pixel / 255 (dynamic binarisation)."""
    p = images.float().flatten(1) / 255.0
    return (torch.rand(p.shape, generator=generator, device=p.device) < p).float()


class VAE(DensityModel):
    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), posterior: str = "none", latent_dim: int = 32,
                 hidden: int = 300, flow_length: int = 4, sylvester_columns: int = 16, householder: int = 4,
                 iaf_hidden: int = 320, centered_flow: bool = False, seed: int = 0):
        super().__init__(image_shape)
        check_arguments(posterior, latent_dim, hidden, flow_length, sylvester_columns, householder, iaf_hidden,
                        centered_flow)
        self.centered_flow = centered_flow
        self.posterior, self.latent_dim = posterior, latent_dim
        # a bound, not a density; an approximate code (posterior mean, decoder mean); figures per image, nats
        self.capabilities = Capabilities(latent_code="approximate", density="bound", kl_term=True,
                                         eval_figures=("neg_elbo", "nll_iw", "nll_iw_bpd"))
        self.latent_shapes = [(latent_dim,)]
        self.encoder = mlp([self.num_dims, hidden, hidden])
        self.mean = nn.Linear(hidden, latent_dim)
        self.std = nn.Sequential(nn.Linear(hidden, latent_dim), nn.Softplus())
        self.flow = posterior_flow(posterior, latent_dim, hidden, flow_length, sylvester_columns, householder,
                                   iaf_hidden, seed)
        self.decoder = nn.Sequential(mlp([latent_dim, hidden, hidden]), nn.Linear(hidden, self.num_dims))

    # -- the bound ------------------------------------------------------------------------------
    def posterior_sample(self, x: Tensor, samples: int = 1, generator: torch.Generator | None = None):
        """z_K ~ q(z | x) and log q(z_K | x): [B, samples, L] and [B, samples]."""
        h = self.encoder(x)
        mean, std = self.mean(h), self.std(h) + 1e-5
        eps = torch.randn((x.shape[0], samples, self.latent_dim), generator=generator, device=x.device)
        offset = std[:, None] * eps
        log_q0 = (-0.5 * (math.log(2 * math.pi) + eps * eps) - torch.log(std[:, None])).sum(-1)
        # h has one row per image; the sample rows are image-major, so each row of h serves its image's
        # `samples` consecutive rows and the flows' amortisation heads run once per image
        # (glow.flows.vector.ParameterSource), not once per (image, sample) pair
        z, logdet = self.flow_from(mean[:, None].expand_as(offset).reshape(-1, self.latent_dim),
                                   offset.reshape(-1, self.latent_dim), h)
        return z.view_as(offset), log_q0 - logdet.view_as(log_q0)

    def flow_from(self, mean: Tensor, offset: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """z_K and the flows' log|det| for z_0 = mean + offset [N, L]: f(z_0), or mean + f(offset) with
        ``centered_flow`` (a translation by the mean: the same log|det|)."""
        if self.centered_flow:
            u, logdet = self.flow(offset, h)
            return mean + u, logdet
        return self.flow(mean + offset, h)

    def log_likelihood_and_prior(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(log p(x | z), log p(z)) for x [B, D], z [B, S, L] -> [B, S] each."""
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x[:, None].expand_as(logits), reduction="none").sum(-1)
        return log_px, (-0.5 * (math.log(2 * math.pi) + z * z)).sum(-1)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) + log p(z) for x [B, D], z [B, S, L] -> [B, S]."""
        log_px, log_pz = self.log_likelihood_and_prior(x, z)
        return log_px + log_pz

    def neg_elbo(self, x: Tensor, generator: torch.Generator | None = None, kl_weight: float = 1.0) -> Tensor:
        """One-sample -ELBO per image, nats; x binary [B, D]. With kl_weight = β < 1 the KL part
        log q(z | x) - log p(z) is scaled by β (KL warm-up); β = 1 is the bound itself."""
        z, log_q = self.posterior_sample(x, 1, generator)
        log_px, log_pz = self.log_likelihood_and_prior(x, z)
        return -(log_px - kl_weight * (log_q - log_pz))[:, 0]

    @torch.no_grad()
    def iw_bounds(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """From k posterior samples per image: (importance-weighted NLL, -ELBO averaged over the k), nats [B]."""
        log_w = []
        per_pass = max(1, IW_CHUNK // x.shape[0])
        for start in range(0, k, per_pass):
            z, log_q = self.posterior_sample(x, min(per_pass, k - start), generator)
            log_w.append(self.log_joint(x, z) - log_q)
        log_w = torch.cat(log_w, 1).double()
        return -(torch.logsumexp(log_w, 1) - math.log(k)).float(), -log_w.mean(1).float()

    def nll_iw(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """Importance-weighted NLL estimate with k samples per image (Burda et al. 2016), nats [B]."""
        return self.iw_bounds(x, k, generator)[0]

    # -- the density-model interface (glow.density) -------------------------------------------------
    def objective(self, inputs: ModelInputs, terms: ObjectiveTerms) -> tuple[Tensor, dict[str, Tensor]]:
        """-ELBO in bits per pixel (Adam and the clip norm see a bits/dim scale), its KL part scaled by
        terms.kl_weight (module.kl_warmup_steps anneals it from 0 to 1)."""
        generator = inputs.generator
        neg_elbo = self.neg_elbo(binarize(inputs.images, generator), generator, terms.kl_weight)
        loss = (neg_elbo / (self.num_dims * math.log(2))).mean().float()
        return loss, {"loss": loss}

    @torch.no_grad()
    def evaluate(self, inputs: ModelInputs, iw_samples: int = 0) -> dict[str, Tensor]:
        """-ELBO (one posterior sample per image, or the mean over the iw_samples when given: less MC noise),
        and with iw_samples the importance-weighted NLL; nats per image, "bpd" the -ELBO in bits per pixel."""
        generator = inputs.generator
        x = binarize(inputs.images, generator)
        figures = {}
        if iw_samples:
            nll, neg_elbo = self.iw_bounds(x, iw_samples, generator)
            figures.update(nll_iw=nll, nll_iw_bpd=nll / (self.num_dims * math.log(2)))
        else:
            neg_elbo = self.neg_elbo(x, generator)
        return {"bpd": neg_elbo / (self.num_dims * math.log(2)), "neg_elbo": neg_elbo, **figures}

    def decode(self, zs: Sequence[Tensor], cond: Tensor | None = None) -> Tensor:
        """Decoder means (pixel probabilities) in model space [-0.5, 0.5]."""
        z = zs[0]
        return (torch.sigmoid(self.decoder(z)) - 0.5).view(z.shape[0], *self.image_shape)

    def encode(self, x: Tensor, cond: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """The posterior's mean path: z_K = f(μ(x)) (μ + f(0) when centred) for images in model space
        (grey levels as probabilities)."""
        h = self.encoder(x.flatten(1) + 0.5)
        mean = self.mean(h)
        z, _ = self.flow_from(mean, torch.zeros_like(mean), h)
        return [z], torch.zeros(x.shape[0], device=x.device)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, cond: Tensor | None = None,
               noise: Sequence[Tensor] | None = None) -> Tensor:
        z = noise[0] if noise is not None else torch.randn(n, self.latent_dim, device=self.mean.weight.device)
        return self.decode([z * temperature])
