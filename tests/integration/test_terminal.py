"""``acr-transfer`` in a real pseudo-terminal of 80 columns, read back as a person sees the screen: the live
table redraws without Prefect's log lines between its frames, and the final table shows every artifact name
whole (folded over lines, never cut)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.integration.test_cli import BROKEN_ROUTE, LOG_MARKERS
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]
WIDTH = 80
CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]")


class Screen:
    """Just enough of a terminal for rich's output: text, CR/LF, cursor up/down, erase line; scrollback kept."""

    def __init__(self, width: int) -> None:
        self.width, self.lines, self.row, self.col = width, [""], 0, 0

    def feed(self, text: str) -> None:
        pos = 0
        for m in CSI.finditer(text):
            self._text(text[pos : m.start()])
            self._control(m.group(1) or "", m.group(2) or "")
            pos = m.end()
        self._text(text[pos:])

    def _text(self, text: str) -> None:
        for ch in text:
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self._move(1)
            elif ch >= " ":
                if self.col >= self.width:
                    self._move(1)
                    self.col = 0
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[: self.col] + ch + line[self.col + 1 :]
                self.col += 1

    def _control(self, args: str, final: str) -> None:
        n = int(args) if args.isdigit() else 1
        if final == "A":
            self.row = max(0, self.row - n)
        elif final == "B":
            self._move(n)
        elif final == "K":  # erase in line: rich sends 2K (the whole line)
            self.lines[self.row] = "" if args in ("2", "") else self.lines[self.row][: self.col]
        elif final == "G":
            self.col = n - 1

    def _move(self, n: int) -> None:
        self.row += n
        self.lines += [""] * (self.row + 1 - len(self.lines))

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.lines).rstrip("\n")


def in_terminal(standin: StandIn, *args: str, timeout: float = 180) -> tuple[int, str, str]:
    """Run the CLI on a pty of 80x24; returns the exit code, the raw output (escapes removed) and the screen."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "COLUMNS": str(WIDTH), "LINES": "24",
           "TERM": "xterm-256color", "TARGET_VAULT_URL": standin.topology["vaults"]["targetvault"]["url"]}  # fmt: skip
    env.pop("NO_COLOR", None)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, WIDTH, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "deployments", *args], env=env, cwd=ROOT,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)  # fmt: skip
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its side
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    code = proc.wait(timeout=30)
    raw = b"".join(chunks).decode("utf-8", errors="replace")
    screen = Screen(WIDTH)
    screen.feed(raw)
    return code, CSI.sub("", raw), screen.text


def artifact_cells(screen: str) -> str:
    """The final table's first column, fragments joined: a folded name reads whole again."""
    table = screen[screen.rindex("┃ artifact") :]
    return "".join(line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│"))


def test_run_at_80_columns_shows_whole_names_and_no_log_lines(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    repo = "cli/platform-observability/opentelemetry-collector-sidecar-x"
    assert len(repo) == 60
    standin.set_speed(1.5)  # long enough for the live table to redraw a few times
    try:
        image = push_file_artifact(src, repo, "v1.2.3", b"a long name at 80 columns")
        other = push_file_artifact(src, repo, "v2", b"the same long name, named by digest")
        code, raw, screen = in_terminal(
            standin, "run", "--route", "direct", "--routes", "routes.example.yaml", "--artifact", image.by_tag,
            "--artifact", other.by_digest, "--transfer-id", "clitty00001",
        )  # fmt: skip
    finally:
        standin.set_speed(0.3)
    Path(os.environ["PREFECT_HOME"], "tty-run.txt").write_text(screen)  # the capture, for a person to look at
    assert code == 0, screen
    assert not [m for m in LOG_MARKERS if m in raw], raw
    assert "export" in raw and "Succeeded" in raw  # the live table was drawn
    assert all(len(line) <= WIDTH for line in screen.splitlines()), screen
    cells = artifact_cells(screen)
    assert image.by_tag in cells and other.by_digest in cells, screen
    assert image.digest[:19] in screen and "every artifact verified in the target" in screen
    assert "log: " in screen and "┃ step" not in screen  # the live table is gone, the final one stays


def test_a_failed_preflight_at_80_columns_is_one_list_without_traceback(standin: StandIn, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(BROKEN_ROUTE)
    code, raw, screen = in_terminal(standin, "run", "--route", "broken", "--routes", str(routes))
    Path(os.environ["PREFECT_HOME"], "tty-preflight.txt").write_text(screen)
    assert code == 2, screen
    assert not [m for m in LOG_MARKERS if m in raw], raw
    flat = " ".join(screen.split())  # lines wrapped at 80 columns, read as one text
    assert flat.count("✗ export pipeline 'nosuchexport' on sourceregistry") == 1, screen
    assert "nothing was created" in flat and "--transfer-id" not in flat and "┏" not in screen
