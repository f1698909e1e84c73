"""The layers are enforced, not remembered: ``lint-imports`` (run by ``make lint``) with the contracts in
``.importlinter`` passes on the product as it is, and fails, naming the contract, when one import crosses a
layer. Each case runs on a copy of the packages in a temporary directory, so the working tree is untouched."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
PACKAGES = ("acr_transfer", "tasks", "flows", "deployments", "emulator")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def contract_names() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    prefix = "importlinter:contract:"
    return {
        section[len(prefix) :]: parser[section]["name"] for section in parser.sections() if section.startswith(prefix)
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The product's packages and the contracts, copied once; each test copies this copy."""
    tree = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(CONFIG, tree / ".importlinter")
    return tree


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # the copy comes first on the path, ahead of the editable install of the working tree
    env = {**os.environ, "PYTHONPATH": str(tree), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(tree / ".importlinter")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_contracts_are_the_architectures() -> None:
    assert set(contract_names()) == {"core-without-prefect", "layers", "product-without-standin"}


def test_the_product_keeps_every_contract(pristine: Path) -> None:
    result = lint_imports(pristine)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in contract_names().values():
        assert f"{name} KEPT" in result.stdout


@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [
        ("acr_transfer/bad.py", "import prefect\n", "core-without-prefect"),
        ("acr_transfer/bad.py", "def later() -> None:\n    from tasks import clients  # noqa: F401\n", "layers"),
        ("tasks/bad.py", "import flows\n", "layers"),
        ("flows/bad.py", "from deployments import cli\n", "layers"),
        ("deployments/bad.py", "import emulator.main\n", "product-without-standin"),
    ],
)
def test_one_import_across_a_layer_fails_the_lint(
    pristine: Path, tmp_path: Path, module: str, source: str, contract: str
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    (tree / module).write_text(source)
    result = lint_imports(tree)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    name = contract_names()[contract]
    assert f"{name} BROKEN" in output
    assert module.removesuffix(".py").replace("/", ".") in output
