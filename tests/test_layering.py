"""No module of bayesmri imports a higher layer (docs/DESIGN.md, "Layers").

The imports of every module (module level and inside functions, since a lazy import is a dependency
all the same) are read with ``ast``; each top-level module or subpackage of ``bayesmri`` has a layer,
and an import from a strictly higher layer fails the test, naming the file and line. Imports within one
layer are allowed, except between the command modules: a command parses its arguments and calls the
library, so what two commands share lives below ``commands``. ``LAYERS`` is the one place the order is written.
"""
import ast
from pathlib import Path

import bayesmri

ROOT = Path(bayesmri.__file__).resolve().parent

#: Lowest first. A name is a top-level module or subpackage of bayesmri ("bayesmri" is the package's
#: own __init__). ``methods`` is the method package (registry, families, run helpers, what ``recon`` writes) at
#: the level of what runs methods; ``options`` reads the methods' signatures; ``demo`` runs them all.
LAYERS = [
    ["bayesmri", "_validate", "_interrupt", "_malloc"],
    ["io", "metrics"],
    ["bart", "evaluation", "calibration"],
    ["physics"],
    ["data"],
    ["priors"],
    ["recon", "samplers"],
    ["flows"],
    ["train"],
    ["methods", "options", "report", "dataset_recon", "demo"],
    ["commands"],
    ["cli"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}

#: (importing module, imported group) -> why it is allowed for now. Each must still be needed.
EXCEPTIONS: dict = {}


def _module_name(path: Path) -> str:
    parts = ("bayesmri",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _group(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "bayesmri"
    name = parts[1]
    # "from bayesmri import __version__" names an attribute of the package, not a module
    return name if (ROOT / name).is_dir() or (ROOT / f"{name}.py").exists() else "bayesmri"


def _imports(path: Path, module: str | None = None):
    """``(line, imported module)`` for every import of a bayesmri module in ``path`` (named ``module``)."""
    module = module or _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "bayesmri")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "bayesmri":
                continue
            if node.module is None or target == "bayesmri":  # "from .. import x": x may be a module
                yield from ((node.lineno, f"{target}.{a.name}") for a in node.names)
            else:
                yield node.lineno, target


def _violations():
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        src = _group(module)
        for line, target in _imports(path):
            dst = _group(target)
            if LEVEL[dst] > LEVEL[src]:
                found.setdefault((module, dst), []).append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    return found


def test_every_module_has_a_layer():
    groups = {_group(_module_name(p)) for p in ROOT.rglob("*.py")}
    assert groups <= set(LEVEL), f"add {sorted(groups - set(LEVEL))} to LAYERS"


def test_no_module_imports_a_higher_layer():
    bad = {k: v for k, v in _violations().items() if k not in EXCEPTIONS}
    assert not bad, "imports from a higher layer (docs/DESIGN.md, Layers):\n" + "\n".join(
        line for lines in bad.values() for line in lines)


def _command_imports(path: Path, module: str | None = None):
    """The imports of another command module by the command module ``path`` (``file:line imports target``)."""
    module = module or _module_name(path)
    return [f"{path.name}:{line} imports {target}" for line, target in _imports(path, module)
            if target.startswith("bayesmri.commands.") and target != module]


def test_no_command_imports_another_command():
    # cli.py names the command modules as strings (loaded by importlib), so it is not an import here
    bad = [b for path in sorted((ROOT / "commands").glob("*.py")) for b in _command_imports(path)]
    assert not bad, "a command imports another command; move what they share into the library:\n" + "\n".join(bad)


def test_the_command_check_sees_relative_and_absolute_imports(tmp_path):
    src = tmp_path / "fake.py"
    src.write_text("from ..methods import run_method\nfrom .recon import add_arguments\n"
                   "def f():\n    import bayesmri.commands.demo\n    from . import simulate\n")
    found = _command_imports(src, "bayesmri.commands.fake")
    assert [f.split(" imports ")[1] for f in found] == ["bayesmri.commands.recon", "bayesmri.commands.demo",
                                                        "bayesmri.commands.simulate"]


def test_every_listed_exception_is_still_needed():
    stale = set(EXCEPTIONS) - set(_violations())
    assert not stale, f"remove these from EXCEPTIONS (the import is gone): {sorted(stale)}"


def test_the_checker_resolves_relative_lazy_and_package_imports(tmp_path):
    # a made-up physics module: the checker must see each of these imports and judge the two upward ones
    src = tmp_path / "fake.py"
    src.write_text("from .linop import LinearOperator\nfrom ..recon.tv import tv_recon\nfrom .. import io, __version__\n"
                   "def f():\n    import bayesmri.commands.recon\n    from bayesmri import cli\n")
    found = list(_imports(src, "bayesmri.physics.fake"))
    assert found == [(1, "bayesmri.physics.linop"), (2, "bayesmri.recon.tv"), (3, "bayesmri.io"),
                     (3, "bayesmri.__version__"), (5, "bayesmri.commands.recon"), (6, "bayesmri.cli")]
    upward = [t for _, t in found if LEVEL[_group(t)] > LEVEL["physics"]]
    assert upward == ["bayesmri.recon.tv", "bayesmri.commands.recon", "bayesmri.cli"]
