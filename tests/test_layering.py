"""The package's layers, held: the math knows no array library, only the CLI knows typer and rich,
and `import gpunet` (the Python API) loads neither the CLI's libraries nor the downloader."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gpunet

PACKAGE = Path(gpunet.__file__).parent
MODULES = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))
CLI_LIBRARIES = {"typer", "rich", "click"}
# The faces that print: the CLI package, and `python -m gpunet` (which is the CLI).
CLI_MODULES = {m for m in MODULES if m.startswith("cli/")} | {"__main__.py"}


def imported(module: str) -> set[str]:
    """The top-level names of everything a module imports, at any depth (lazy imports count too)."""
    tree = ast.parse((PACKAGE / module).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    return names


def test_every_layer_is_a_subpackage() -> None:
    top = sorted(m for m in MODULES if "/" not in m)
    assert top == ["__init__.py", "__main__.py", "errors.py", "estimator.py", "params.py", "version.py"]
    assert {m.split("/")[0] for m in MODULES if "/" in m} == {
        "core", "device", "data", "training", "files", "bench", "cli"
    }  # fmt: skip


@pytest.mark.parametrize("module", [m for m in MODULES if m not in CLI_MODULES])
def test_only_the_cli_imports_typer_or_rich(module: str) -> None:
    assert not {name.split(".")[0] for name in imported(module)} & CLI_LIBRARIES
    assert not any(name.startswith("gpunet.cli") for name in imported(module)), "the library never calls its CLI"


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("core/")])
def test_the_math_imports_neither_numpy_nor_cupy(module: str) -> None:
    assert not {name.split(".")[0] for name in imported(module)} & {"numpy", "cupy"}


def test_import_gpunet_loads_no_cli_library_and_no_downloader() -> None:
    code = (
        "import gpunet, sys; print(sorted(m for m in ('typer', 'rich', 'click', 'urllib.request') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_the_public_api_is_what_gpunet_names() -> None:
    public = sorted(name for name in vars(gpunet) if not name.startswith("_") and not isinstance(
        vars(gpunet)[name], type(gpunet)))  # fmt: skip
    assert public == sorted(n for n in gpunet.__all__ if n != "__version__")
    for name in gpunet.__all__:
        assert getattr(gpunet, name) is not None
