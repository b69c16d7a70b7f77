"""``--help`` of every entry point: usage, examples, the choices, the main keys with their comments, the exit
codes. The choices come from the tables (glow.sampling.tasks.TASKS, glow.sampling.inpaint.ROUTES, a script's
suites) and from conf/'s groups, the keys and comments from the entry's own conf/*.yaml files, so the page
cannot drift from what it describes. Building it loads no model and no data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

WIDTH = 118  # a description is cut to one line of a wide terminal
CODES_ONE_LINE = "2 a bad key, value, file or checkpoint: ONE line `config error: ...` on stderr, before any work"
CODES_UNEXPECTED = "1 an unexpected failure (a traceback: please report it)"


@dataclass(frozen=True)
class Page:
    script: str                                   # e.g. "train.py", "scripts/evaluate.py"
    summary: str
    examples: tuple[str, ...]                     # 3-5 commands, each with its comment after "#"
    exit_codes: tuple[str, ...]
    config: str | None                            # conf/<config>.yaml: its own keys, with their comments
    groups: tuple[str, ...] = ()                  # conf groups whose options are listed (GROUP=OPTION)
    group_keys: tuple[str, ...] = ()              # "model/glow": that file's commented keys, as model.<key>
    choices: Callable[[], dict[str, list[tuple[str, str]]]] = field(default=lambda: {})
    hydra: bool = True                            # Hydra overrides (groups, +key, --cfg job) or plain key=value


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= WIDTH - 24 else text[: WIDTH - 27] + "..."


def _header(lines: list[str]) -> tuple[list[str], int]:
    """The leading comment block of a conf file (``# @package`` lines skipped) and where it ends."""
    block, end = [], 0
    for end, line in enumerate(lines):
        if not line.startswith("#"):
            return block, end
        if not line.startswith("# @package"):
            block.append(line.lstrip("# ").rstrip())
    return block, len(lines)


def header_comment(path: Path) -> str:
    """The first sentence of a conf file's leading comment; a leading ``python ... :`` example is dropped."""
    text = " ".join(_header(path.read_text().splitlines())[0])
    text = re.sub(r"^python \S+( \S+=\S+)* : ", "", text)
    sentence = re.split(r"(?<=[a-z0-9)][.])\s+(?=[A-Z])", text, maxsplit=1)[0]
    return _one_line(sentence)


def keys_with_comments(path: Path, prefix: str = "", commented_only: bool = False) -> list[tuple[str, str, str]]:
    """(key, value, comment) of each top-level key of a YAML file: its inline comment, else the comment lines
    right above it (not the file's header). ``_target_``, ``defaults``, ``hydra`` and ``_private`` keys are
    left out (they are not options)."""
    lines = path.read_text().splitlines()
    out, above = [], []
    for line in lines[_header(lines)[1]:]:
        if line.startswith("#"):
            above.append(line.lstrip("# ").rstrip())
            continue
        match = re.match(r"^([A-Za-z][\w]*):\s*([^#]*?)\s*(?:#\s*(.*))?$", line)
        if match and match.group(1) not in ("defaults", "hydra"):
            key, value, inline = match.groups()
            comment = inline or " ".join(a for a in above if a)
            if (comment or not commented_only) and not value.startswith("${"):  # ${...}: wiring, not an option
                out.append((prefix + key, value or "{...}", _one_line(comment or "")))
        if not line.startswith(" "):
            above = []
    return out


def group_options(conf: Path, group: str) -> list[tuple[str, str]]:
    return [(p.stem, header_comment(p)) for p in sorted((conf / group).glob("*.yaml"))]


def _rows(rows: list[tuple[str, str]], indent: int = 2) -> list[str]:
    width = min(max((len(a) for a, _ in rows), default=0), 34)
    return [f"{' ' * indent}{a:<{width}}  {b}".rstrip() for a, b in rows]


def render(page: Page, conf: Path) -> str:
    run = f"python {page.script}"
    lines = [f"usage: {run} [KEY=VALUE ...]" + (" [GROUP=OPTION ...]" if page.groups else ""),
             f"       {run} --help        this page (nothing runs)", "", page.summary, "", "examples:"]
    width = max(len(e.split("  #")[0]) for e in page.examples)
    for example in page.examples:
        command, _, comment = example.partition("  #")
        lines.append((f"  {command:<{width}}" + (f"  #{comment}" if comment else "")).rstrip())
    for name, rows in page.choices().items():
        lines += ["", f"{name}:", *_rows(rows)]
    for group in page.groups:
        lines += ["", f"{group}=OPTION:", *_rows(group_options(conf, group))]
    keys = keys_with_comments(conf / f"{page.config}.yaml") if page.config else []
    for spec in page.group_keys:
        group = spec.split("/")[0]
        keys += keys_with_comments(conf / f"{spec}.yaml", prefix=f"{group}.")
    if keys:
        how = (f"any key of the composed config can be set the same way; `{run} --cfg job` prints them all"
               if page.hydra else "nothing else is accepted: an unknown key is a one-line error")
        lines += ["", f"main keys (KEY=VALUE, default shown; {how}):",
                  *_rows([(f"{k}={v}", c) for k, v, c in keys])]
    lines += ["", "exit codes:", *(f"  {code}" for code in page.exit_codes)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the pages


def _sample_choices() -> dict[str, list[tuple[str, str]]]:
    from glow.sampling.inpaint import ROUTES
    from glow.sampling.tasks import TASKS

    return {"task=NAME (glow.sampling.tasks.TASKS; n means what the task says)":
            [(name, f"{t.summary} (n={t.default_n})") for name, t in TASKS.items()],
            "method=ROUTE (task=inpaint; auto picks the checkpoint's best)": _routes(ROUTES)}


def _routes(routes) -> list[tuple[str, str]]:
    return [(name, _one_line(route.summary)) for name, route in routes.items()]


def _inpaint_choices() -> dict[str, list[tuple[str, str]]]:
    from glow.masks import MASK_KINDS
    from glow.sampling.inpaint import ROUTES

    return {"method=ROUTE or a list, e.g. [latent,mcmc] (auto: the checkpoint's best)": _routes(ROUTES),
            "mask=KIND": [(", ".join(MASK_KINDS), "the hole of every test image")]}


PAGES = {
    "train": Page(
        "train.py", "Train a density model (Glow and its NICE / RealNVP presets, VAE, MAF, IAF, distillation) with "
        "Lightning;\nthe run directory gets checkpoints/, samples/ and results.json (test bits/dim).",
        ("python train.py  # the default experiment: MNIST, a small Glow (make train)",
         "python train.py model=realnvp trainer.max_steps=3000",
         "python train.py experiment=vae_mnist debug=vector  # a tiny VAE run (debug=vector: vae, maf, iaf, distill)",
         "python train.py experiment=cifar10_glow trainer=gpu",
         "python train.py hydra.run.dir=<run dir> ckpt_path=last  # resume that run"),
        ("0 done; results.json written", CODES_UNEXPECTED, CODES_ONE_LINE + " (nothing written)",
         "3 diverged: the last finite weights kept, results.json says so",
         "130 / 138 / 143 stopped by SIGINT / SIGUSR1 / SIGTERM after writing a resumable last.ckpt"),
        "train", ("experiment", "model", "data", "trainer", "logger", "debug"),
        ("model/glow", "data/mnist", "module/default", "trainer/cpu")),
    "sample": Page(
        "sample.py", "Sample from a train.py checkpoint: one task, a PNG grid into outputs/sample/<time>/.",
        ("python sample.py ckpt_path=<run>/checkpoints/last.ckpt  # 64 samples at T=0.7",
         "python sample.py ckpt_path=... task=temperature",
         "python sample.py ckpt_path=... task=interpolate indices=[0,1,2,3] mode=slerp",
         "python sample.py ckpt_path=... task=inpaint images=[a.png] mask_image=m.png",
         "python sample.py ckpt_path=... task=reconstruct data=imagefolder data.path=<folder>"),
        ("0 done; the grid written", CODES_UNEXPECTED, CODES_ONE_LINE),
        "sample", ("data",), choices=_sample_choices),
    "evaluate": Page(
        "scripts/evaluate.py", "Test (or validation) bits/dim of a train.py checkpoint, by the code train.py "
        "tests with;\nresults.json into outputs/evaluate/<time>/.",
        ("python scripts/evaluate.py ckpt_path=<run>/checkpoints/last.ckpt data=mnist",
         "python scripts/evaluate.py ckpt_path=... data=imagefolder data.path=<folder>",
         "python scripts/evaluate.py ckpt_path=... split=val trainer.precision=bf16-mixed"),
        ("0 done; results.json written", CODES_UNEXPECTED, CODES_ONE_LINE),
        "evaluate", ("data", "trainer")),
    "evaluate_inpainting": Page(
        "scripts/evaluate_inpainting.py", "Inpainting of test images with a hole, by every route, against two baselines "
        "(mean fill,\nnearest neighbour): PSNR, SSIM, diversity; <run dir>/inpainting.json and a PNG grid per route.",
        ("python scripts/evaluate_inpainting.py ckpt_path=<run>/checkpoints/last.ckpt",
         "python scripts/evaluate_inpainting.py ckpt_path=... \"method=[latent,mcmc]\" n_images=16",
         "python scripts/evaluate_inpainting.py ckpt_path=... mask=half json=results/mnist.json"),
        ("0 done; results.json written", CODES_UNEXPECTED, CODES_ONE_LINE),
        "evaluate_inpainting", ("data",), choices=_inpaint_choices),
    "demo": Page(
        "scripts/demo.py", "The web page: sample, interpolate, reconstruct and inpaint with a train.py checkpoint "
        "(needs the demo extra:\npip install -e '.[demo]'). Prints `demo ready: <url>`; Ctrl-C stops it.",
        ("python scripts/demo.py  # the newest outputs/**/last.ckpt",
         "python scripts/demo.py ckpt_path=<run>/checkpoints/last.ckpt port=7860",
         "python scripts/demo.py ckpt_path=... host=0.0.0.0 auth=user:secret  # serve the network, with a password"),
        ("0 stopped (Ctrl-C)", CODES_UNEXPECTED, CODES_ONE_LINE),
        "demo", ("data",)),
    "learning_curve": Page(
        "scripts/learning_curve.py", "Test bits/dim at fixed steps for named variants over seeds, each a train.py "
        "run;\n<output>.json, .csv and .png (mean over seeds, min-max band).",
        ("python scripts/learning_curve.py  # the default, plain Glow and its ablations, 3 seeds",
         "python scripts/learning_curve.py variants=[default,peer_budget] seeds=[0] max_steps=400 eval_steps=[200,400]",
         "python scripts/learning_curve.py output=docs/learning_curve 'overrides=[\"module.lr=2e-3\"]'"),
        ("0 every run finished; the curve written", CODES_UNEXPECTED, CODES_ONE_LINE),
        "learning_curve"),
    "benchmark": Page(
        "scripts/benchmark.py", "Training speed, activation memory and sampling speed of Glow, one subprocess per "
        "row;\na Markdown table (and json=PATH). Ratios within one run are what to quote.",
        ("python scripts/benchmark.py  # the CPU set (memory + minimal)",
         "python scripts/benchmark.py suite=memory json=out.json",
         "python scripts/benchmark.py suite=one model.memory=invertible model.steps=32",
         "python scripts/benchmark.py plot_from=out.json plot=activation_memory.png  # redraw, no measuring"),
        ("0 every row measured", "1 some rows failed (the table says which), or an unexpected failure",
         CODES_ONE_LINE),
        "benchmark", hydra=False),
}


def help_text(name: str, conf: str | Path, choices: dict[str, list[tuple[str, str]]] | None = None) -> str:
    """The --help page of entry point ``name`` (a key of PAGES), with extra ``choices`` (a script's own tables)."""
    page = PAGES[name]
    if choices:
        page = Page(**{**page.__dict__, "choices": lambda: {**PAGES[name].choices(), **choices}})
    return render(page, Path(conf))
