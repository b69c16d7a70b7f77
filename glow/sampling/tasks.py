"""sample.py's tasks: ONE table (``TASKS``). Each task turns the config into calls of glow.sampling and
returns (images in model space, images per row, a one-line summary of what the rows are).

Adding a task: its function ``(cfg, model, n, generator) -> (images, nrow, summary)`` in its own file
(or beside its kin in task_grids.py), a row here, and its keys in conf/sample.yaml. ``needs`` says in
one line why a model cannot do it, from the model's capabilities (glow.density), or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from omegaconf import DictConfig

from glow.conditioning import label_problem
from glow.density import Capabilities, DensityModel
from glow.errors import UnsupportedError, fail
from glow.sampling.inpaint import pick_route
from glow.sampling.task_grids import task_class, task_interpolate, task_reconstruct, task_sample, task_temperature
from glow.sampling.task_inpaint import task_inpaint
from glow.sampling.task_manipulate import task_manipulate

Needs = Callable[[Capabilities], "str | None"]


def _samples_from_nothing(caps: Capabilities) -> str | None:
    return None if caps.samples_from_nothing else (
        "this checkpoint is an inpainting model (model.conditional=image): it samples given a masked image; "
        "use inpaint, interpolate, reconstruct or manipulate")


def _class_conditional(caps: Capabilities) -> str | None:
    return None if caps.conditioning.labels else (
        f"this checkpoint is not class-conditional (model.conditional={caps.conditioning.name or 'null'}); "
        f"train one with experiment=mnist_class")


def _latent_code(caps: Capabilities) -> str | None:
    return None if caps.latent_code != "none" else "this checkpoint's model has no latent code"


def _inpainting_route(caps: Capabilities) -> str | None:
    return None if caps.inpaint_routes else "this checkpoint's model has no inpainting route"


@dataclass(frozen=True)
class Task:
    run: Callable
    default_n: int      # what n means: see summary
    needs: Needs
    summary: str        # one line for sample.py --help


TASKS = {
    "sample": Task(task_sample, 64, _samples_from_nothing, "n samples at temperature (a square-ish grid)"),
    "temperature": Task(task_temperature, 8, _samples_from_nothing,
                        "a row of n samples per value of temperatures, the same noise in every row"),
    "interpolate": Task(task_interpolate, 4, _latent_code,
                        "n pairs of real images (indices or images), a row of `points` latent interpolations each"),
    "reconstruct": Task(task_reconstruct, 16, _latent_code, "n real images beside decode(encode(x))"),
    "class": Task(task_class, 8, _class_conditional, "a row of n samples per class (class-conditional models)"),
    "manipulate": Task(task_manipulate, 4, _latent_code,
                       "n test images moved along an attribute's latent direction at `scales`"),
    "inpaint": Task(task_inpaint, 8, _inpainting_route,
                    "n completions per image of a masked region (mask, or your own mask_image)"),
}


def check_fit(model: DensityModel, task: str, method: str | None = None) -> None:
    """The task (and for inpaint the route ``method``) fits this model, or one line saying why not."""
    problem = TASKS[task].needs(model.capabilities)
    if problem is not None:
        raise UnsupportedError(f"task={task!r} is not allowed: {problem}")
    if task == "inpaint":
        pick_route(model, method or "auto")


def check_task(cfg: DictConfig, model: DensityModel) -> None:
    """The task, its inpainting route and its label keys fit this checkpoint's model, or one line."""
    check_fit(model, cfg.task, cfg.get("method"))
    for key in ("label", "classes"):
        problem = label_problem(model.kind, cfg.get(key))
        if problem is not None:
            fail(key, cfg.get(key), problem)


def output_name(cfg: DictConfig) -> str:
    return f"interpolate_{cfg.mode}.png" if cfg.task == "interpolate" else f"{cfg.task}.png"
