"""Without the ``emulator`` extra (a worker image), starting the stand-in says in one line how to get it and
exits 2, instead of a traceback. The extra's module is hidden by a stand-in module earlier on the path that
fails to import as a missing one does; nothing is uninstalled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [("-m", "deployments", "emulator", "up"), ("-m", "emulator", "up")],
    ids=["acr-transfer emulator up", "python -m emulator up"],
)
def test_without_the_extra_it_says_how_to_get_it(tmp_path: Path, command: tuple[str, ...]) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "trustme.py").write_text('raise ModuleNotFoundError("No module named \'trustme\'", name="trustme")\n')
    env = {**os.environ, "PYTHONPATH": str(hidden)}
    result = subprocess.run(
        [sys.executable, *command, "--state-dir", str(tmp_path / "state")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'acr-transfer[emulator]'" in lines[0]
    assert "uv sync --extra emulator" in lines[0]
    assert not (tmp_path / "state").exists()
