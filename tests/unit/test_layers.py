"""The package's layers, as the folders show them: a layer imports only the layers below it.

core (pure) < providers < kube (the Kubernetes shell) < sandbox < cli. The core does no I/O, so it must not
import the shell's libraries either; the operator's run path must not import the sandbox (it is not in the
image) nor kmock.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "canaria"
ORDER = ["core", "providers", "routers", "kube", "sandbox", "cli"]
#: Libraries that mean I/O or a framework: the pure core imports none of them.
SHELL_LIBRARIES = {"kopf", "kubernetes", "requests", "prometheus_api_client", "kmock", "aiohttp", "rich"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


@pytest.mark.parametrize("layer", ORDER)
def test_a_layer_never_imports_upward(layer: str) -> None:
    above = set(ORDER[ORDER.index(layer) + 1 :])
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(layer)
        for name in _imports(path)
        if name.startswith("canaria.") and name.split(".")[1] in above
    ]
    assert not offenders, offenders


def test_every_module_sits_in_a_layer() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the layers: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(ORDER)


def test_the_core_does_no_io() -> None:
    offenders = [
        f"{path.name} imports {name}"
        for path in _modules("core")
        for name in _imports(path)
        if name.split(".")[0] in SHELL_LIBRARIES
    ]
    assert not offenders, offenders


def test_the_operator_runs_without_the_sandbox() -> None:
    """What `canaria run` imports, loaded in a fresh interpreter: no sandbox module, no kmock."""
    code = (
        "import sys, canaria.cli.main, canaria.kube.operator, canaria.kube.handlers\n"
        "import canaria.kube.reconciler\n"
        "canaria.cli.main.build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('canaria.sandbox', 'kmock')))\n"
        "print(','.join(bad))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""
