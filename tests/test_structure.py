"""The shape of the code base, checked: no import cycle among glow's modules (imports inside functions
counted), no file over 300 lines, no sys.path manipulation, no hasattr probing in the training module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "glow"
MAX_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def glow_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every glow module that importing ``path`` can run, at top level or inside a function: the
    imported module and each package on the way (importing glow.a.b runs glow/a/__init__.py)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    # a module's own packages are initialised before it, and their __init__ may import it: not a cycle
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}

    def add(target: str) -> None:
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in modules and prefix != name and prefix not in own_packages:
                found.add(prefix)

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            add(base)
            for alias in node.names:  # from glow.x import y, where y is a module
                add(f"{base}.{alias.name}")
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_counting_imports_inside_functions():
    modules = glow_modules()
    graph = {name: imports_of(path, modules) for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def python_files() -> list[Path]:
    return [*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py"), REPO / "train.py", REPO / "sample.py"]


def test_no_file_over_300_lines():
    long = {str(p.relative_to(REPO)): n for p in python_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_no_sys_path_manipulation():
    hacks = [str(p.relative_to(REPO)) for p in python_files() if "sys.path" in p.read_text()]
    assert not hacks, hacks


def test_no_hasattr_probes_in_the_training_module_or_train_py():
    probes = [str(p.relative_to(REPO)) for p in (PACKAGE / "module.py", REPO / "train.py")
              if p.exists() and "hasattr(" in p.read_text()]
    assert not probes, probes


ARCHITECTURE = REPO / "docs" / "architecture.md"


def test_every_table_entry_is_documented_in_architecture_md():
    """docs/architecture.md's table of tables names every entry of every registry."""
    from glow.data.registry import SPECS
    from glow.families import CLASSES
    from glow.flows.coupling import TRANSFORMS
    from glow.glow_step import PERMUTATIONS
    from glow.sampling.inpaint import ROUTES
    from glow.sampling.tasks import TASKS

    text = ARCHITECTURE.read_text()
    tables = {"glow.families.CLASSES": CLASSES, "glow.flows.coupling.TRANSFORMS": TRANSFORMS,
              "glow.glow_step.PERMUTATIONS": PERMUTATIONS, "glow.data.registry.SPECS": SPECS,
              "glow.sampling.tasks.TASKS": TASKS, "glow.sampling.inpaint.ROUTES": ROUTES}
    rows = {line.split("|")[1].strip(" `"): line for line in text.splitlines() if line.startswith("| `glow.")}
    for name, table in tables.items():
        assert name in rows, f"docs/architecture.md has no row for {name}"
        missing = [key for key in table if f"`{key}`" not in rows[name]]
        assert not missing, f"docs/architecture.md's row for {name} misses {missing}"


def test_every_file_architecture_md_names_exists():
    text = ARCHITECTURE.read_text()
    named = set(re.findall(r"\b((?:glow|scripts|tests|conf)/[\w/]+\.(?:py|yaml|sh))\b", text))
    missing = sorted(p for p in named if "<" not in p and not (REPO / p).exists())
    assert named and not missing, missing


def test_every_glow_module_is_in_the_layout():
    """Each module file of glow/ is named in the layout (by its file name)."""
    text = ARCHITECTURE.read_text()
    unnamed = sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py" and p.name not in text)
    assert not unnamed, unnamed


def test_readme_is_short_and_shows_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert "make train" in text and "make test" in text


def test_no_issue_numbers_or_machine_paths_in_the_docs():
    pattern = re.compile(r"/wor[k]/|/tm[p]/[a-z]|/roo[t]/|[Ii]ssue [0-9]+")
    offending = [f"{p.relative_to(REPO)}:{i + 1}" for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")]
                 for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert not offending, offending
