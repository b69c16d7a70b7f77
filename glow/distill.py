"""Probability density distillation (Parallel WaveNet, van den Oord et al. 2018): an IAF student, fast to
sample, trained to match a MAF teacher, fast to evaluate, by minimising

    KL(q_s || p_t) = E_{x ~ q_s}[log q_s(x) - log p_t(x)]

estimated on the student's own samples. Both terms are one pass each: the student's sampling pass gives
x and log q_s(x) together (glow.autoregressive.AutoregressiveModel.sample_with_log_prob), the teacher's
density pass gives log p_t(x), and the gradient reaches the student through x (reparameterisation).
No data is needed to train; the batches only set the number of samples per step.

The teacher is frozen. Its architecture comes from its checkpoint (``glow.families.complete_config``
reads it into ``teacher_config``); its weights are loaded by ``initialize``, which then starts the
student from the teacher (``student_init``): "teacher" copies every weight (the student's IAF layers then
use the teacher's MADEs with the noise side as input), "actnorm" copies the ActNorms only (autoregressive
layers start as the identity). The weights of both live in this model's checkpoint.

Evaluation reports the student's exact test bits/dim (its density takes D passes per layer: slow, so
runs limit the test batches), the teacher's on the same images, and the KL estimate in nats per image.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from glow.autoregressive import IAFModel, MAFModel, student_state
from glow.checkpoints import model_weights, read_checkpoint
from glow.density import Capabilities, DensityModel, ModelInputs, ObjectiveTerms
from glow.quantize import bits_per_dim

STUDENT_INITS = ("teacher", "actnorm")
TEACHER_FAMILIES = ("maf",)


def check_arguments(teacher_ckpt, student_init, **_) -> None:
    """The config's checks (before the teacher is read): a teacher checkpoint file, a known student_init."""
    if teacher_ckpt is None or not Path(str(teacher_ckpt)).is_file():
        raise ValueError(f"teacher_ckpt={teacher_ckpt!r} is not allowed: give the checkpoint file of a MAF run, "
                         f"e.g. teacher_ckpt=outputs/maf_mnist/<run>/checkpoints/last.ckpt")
    check_student_init(student_init)


def check_student_init(student_init) -> None:
    if student_init not in STUDENT_INITS:
        raise ValueError(f"model.student_init={student_init!r} is not allowed: use one of {', '.join(STUDENT_INITS)}")


def check_teacher(teacher_config, teacher_ckpt) -> None:
    if not isinstance(teacher_config, dict) or teacher_config.get("family") not in TEACHER_FAMILIES:
        family = (teacher_config.get("family") or "glow") if isinstance(teacher_config, dict) else None
        raise ValueError(f"teacher_ckpt={teacher_ckpt!r} is not allowed: its model family is {family!r}; "
                         f"give a checkpoint of a {' or '.join(TEACHER_FAMILIES)} run (experiment=maf_mnist)")


def distillation_loss(student, teacher, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Per-sample log q_s(x) - log p_t(x) on n student samples, nats: its mean estimates KL(q_s || p_t)."""
    x, log_q = student.sample_with_log_prob(n, generator)
    return log_q - teacher.log_prob(x.view(n, *teacher.image_shape))


class Distill(DensityModel):
    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), teacher_config: dict | None = None,
                 teacher_ckpt: str | None = None, student_init: str = "teacher", seed: int = 0):
        super().__init__(image_shape)
        check_student_init(student_init)
        check_teacher(teacher_config, teacher_ckpt)
        arch = {k: v for k, v in teacher_config.items() if k not in ("family", "image_shape")}
        if tuple(teacher_config.get("image_shape", image_shape)) != tuple(image_shape):
            raise ValueError(f"teacher_ckpt={teacher_ckpt!r} is not allowed: its images are "
                             f"{tuple(teacher_config['image_shape'])}, this data's {tuple(image_shape)}")
        self.teacher_ckpt, self.student_init = teacher_ckpt, student_init
        self.teacher = MAFModel(image_shape, **arch).requires_grad_(False)
        self.student = IAFModel(image_shape, **arch)
        # the student's density, latent code and samples; no inpainting route (its density takes D passes)
        self.capabilities = Capabilities(eval_figures=("teacher_bpd", "kl_estimate"))
        self.latent_shapes = self.student.latent_shapes
        self.register_buffer("initialized", torch.tensor(False))

    # -- init: the teacher's weights, and the student's start --------------------------------------
    @torch.no_grad()
    def initialize(self, x: Tensor | None = None, cond: Tensor | None = None) -> bool:
        if bool(self.initialized):
            return False
        if self.teacher_ckpt is None:
            raise ValueError("teacher_ckpt=None is not allowed: give the MAF checkpoint to distil")
        self.teacher.load_state_dict(model_weights(read_checkpoint(self.teacher_ckpt)))
        state = student_state(self.teacher.state_dict())
        if self.student_init == "actnorm":
            state = {k: v for k, v in state.items() if ".made." not in k}
        self.student.load_state_dict(state, strict=self.student_init == "teacher")
        self.initialized.fill_(True)
        return True

    @property
    def is_initialized(self) -> bool:
        return bool(self.initialized)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    # -- the family interface used by DensityModule ---------------------------------------------------
    def objective(self, inputs: ModelInputs, terms: ObjectiveTerms) -> tuple[Tensor, dict[str, Tensor]]:
        """The KL estimate in bits per dimension, one student sample per image of the batch."""
        kl = distillation_loss(self.student, self.teacher, inputs.images.shape[0], inputs.generator)
        loss = (kl / (self.num_dims * math.log(2))).mean().float()
        return loss, {"loss": loss}

    @torch.no_grad()
    def evaluate(self, inputs: ModelInputs, iw_samples: int = 0) -> dict[str, Tensor]:
        x, n_bits = inputs.x, inputs.n_bits
        return {"bpd": bits_per_dim(self.student.log_prob(x), self.num_dims, n_bits),
                "teacher_bpd": bits_per_dim(self.teacher.log_prob(x), self.num_dims, n_bits),
                "kl_estimate": distillation_loss(self.student, self.teacher, x.shape[0], inputs.generator)}

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.student.log_prob(x)

    def encode(self, x: Tensor, cond: Tensor | None = None):
        return self.student.encode(x)

    def decode(self, zs: Sequence[Tensor], cond: Tensor | None = None) -> Tensor:
        return self.student.decode(zs)

    def sample(self, n: int, temperature: float = 1.0, cond: Tensor | None = None,
               noise: Sequence[Tensor] | None = None) -> Tensor:
        return self.student.sample(n, temperature, cond, noise)

    @torch.no_grad()
    def sampling_rates(self, n: int = 64) -> dict[str, float]:
        """Images per second of teacher (sequential) and student (one pass), n images each, this process."""
        rates = {}
        for name, model in (("student", self.student), ("teacher", self.teacher)):
            model.sample(2)  # warm-up
            start = time.perf_counter()
            model.sample(n)
            rates[f"{name}_images_per_s"] = n / (time.perf_counter() - start)
        rates["sampling_speedup"] = rates["student_images_per_s"] / rates["teacher_images_per_s"]
        return rates

    def final_results(self, results: dict) -> dict:
        """The names scripts rely on, and the sampling speed measured now, in this run."""
        extra = {"student_bpd": results.get("test_bpd"), "teacher_bpd": results.get("test_teacher_bpd"),
                 "kl_estimate": results.get("test_kl_estimate")}
        extra.update(self.sampling_rates())
        return extra
