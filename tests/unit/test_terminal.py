"""What a person sees at 80 columns, rendered with rich's recording console: the final table keeps every
artifact name whole (folded, never cut), the live board, check lines once each, and Prefect's console log
lines diverted into a file."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

from acr_transfer.preflight import Check
from acr_transfer.progress import Notice
from acr_transfer.results import ArtifactRow, TransferResult
from acr_transfer.steps import ArtifactStatus
from deployments.terminal import (
    PrefectLogFile,
    ProgressBoard,
    check_documents,
    checks_report,
    plan_document,
    plan_lines,
    preflight_failure,
    result_document,
    result_table,
    short_digest,
)
from tests.unit.fakes import make_ctx

LONG_REPO = "platform-observability/collectors/opentelemetry-sidecar-xtra"  # 60 characters
DIGEST = "sha256:" + "0123456789abcdef" * 4


def render(renderable: RenderableType, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def first_cells(text: str) -> str:
    """The first column's fragments of every table body line, joined: a folded name reads whole again."""
    cells = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    return "".join(cells)


def result(*rows: ArtifactRow) -> TransferResult:
    return TransferResult(route="direct", transfer_id="abc123def456", succeeded=True, rows=list(rows))


def row(artifact: str, batch: int = 1, status: ArtifactStatus = ArtifactStatus.VERIFIED) -> ArtifactRow:
    return ArtifactRow(
        artifact=artifact, batch=batch, export_run="xabc123def456b001a1", import_run="iabc123def456b001a1",
        status=status, digest=DIGEST,
    )  # fmt: skip


def test_the_final_table_fits_80_columns_and_keeps_every_name_whole() -> None:
    names = [f"{LONG_REPO}:v1.2.3", f"{LONG_REPO}@{DIGEST}", "cli/app:v1"]
    assert len(LONG_REPO) == 60
    text = render(result_table(result(*(row(n) for n in names))))
    assert all(len(line) <= 80 for line in text.splitlines()), text
    joined = first_cells(text)
    for name in names:
        assert name in joined, text
    assert "…" not in text  # nothing cut
    assert "sha256:0123456789ab " in text or "sha256:0123456789ab│" in text.replace(" │", "│")
    assert "xabc123def456b001a1" not in text  # run names only on request


def test_run_names_appear_with_show_runs() -> None:
    text = render(result_table(result(row("cli/app:v1"))), width=120)
    assert "export run" not in text
    text = render(result_table(result(row("cli/app:v1")), show_runs=True), width=120)
    assert "xabc123def456b001a1" in text and "iabc123def456b001a1" in text


def test_status_and_batch_columns_are_never_wrapped() -> None:
    text = render(result_table(result(row(LONG_REPO, 12, ArtifactStatus.NOT_VERIFIED))))
    assert "not verified" in text and " 12 " in text


def test_short_digest() -> None:
    assert short_digest(DIGEST) == "sha256:0123456789ab"
    assert short_digest("") == ""


def test_the_board_shows_preflight_until_a_run_reports_then_one_row_per_step() -> None:
    board = ProgressBoard("abc123def456")
    assert "preflight checks" in render(board.render())
    assert not board.created_runs
    board(Notice("someoneelse1", 1, "export", "Running", "xsomeoneelse1b001a1", 10))
    assert not board.created_runs  # another transfer's notices are not ours
    board(Notice("abc123def456", 1, "export", "Running", "xabc123def456b001a1", 40))
    board(Notice("abc123def456", 1, "export", "Succeeded", "xabc123def456b001a1", 100))
    board(Notice("abc123def456", 1, "bridge", "Running", "direct/abc123def456/batch001.tar"))
    text = render(board.render())
    assert board.created_runs
    assert text.count("export") == 1 and "Succeeded" in text and "100%" in text and "bridge" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_every_check_is_printed_once_then_the_count() -> None:
    checks = [
        Check("export pipeline 'exportpipeline' on sourceregistry", True, "Succeeded"),
        Check("export pipeline 'nosuchexport' on sourceregistry", False, "does not exist", "create it"),
    ]
    text = render(checks_report(checks), width=200)
    assert text.count("✓ export pipeline 'exportpipeline'") == 1
    assert text.count("✗ export pipeline 'nosuchexport'") == 1 and "fix: create it" in text
    assert "1 of 2 checks passed; nothing was created" in text


def test_a_failed_preflight_inside_run_lists_each_failure_once_and_says_nothing_was_created() -> None:
    message = "preflight of route 'broken' failed (1 of 1 checks); nothing was created:\n✗ export pipeline 'x': gone"
    text = render(preflight_failure(message, ["✗ export pipeline 'x': gone"]), width=200)
    assert text.count("✗ export pipeline 'x': gone") == 1
    assert "preflight of route 'broken' failed (1 of 1 checks); nothing was created" in text
    assert "Traceback" not in text and "--transfer-id" not in text


def test_markup_in_user_text_is_printed_as_is() -> None:
    text = render(checks_report([Check("secret [red]x[/red]", False, "[bold]gone")]), width=200)
    assert "secret [red]x[/red]: [bold]gone" in text


def test_the_plan_names_every_run_and_blob() -> None:
    ctx = make_ctx(artifacts=["demo/hello:v1"])
    text = render(plan_lines(ctx), width=200)
    doc = plan_document(ctx)
    assert f"transfer {ctx.transfer_id} on route demo: 1 artifacts in 1 batch(es)" in text
    assert doc["batches"][0]["export_run"] in text and doc["batches"][0]["blob"] in text


def test_the_json_documents_are_plain_json() -> None:
    doc = {"result": result_document(result(row("cli/app:v1"))), "checks": check_documents([Check("a", True, "b")])}
    back = json.loads(json.dumps(doc))
    assert back["result"]["rows"][0]["status"] == "verified" and back["result"]["verified"] == 1
    assert back["checks"] == [{"name": "a", "ok": True, "detail": "b", "fix": ""}]


@pytest.fixture
def console_logger() -> Iterator[logging.Logger]:
    """A logger for a handler writing to this process's stderr, as Prefect's console handler does."""
    logger = logging.getLogger("prefect.test_terminal")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers.clear()


def to_stderr(logger: logging.Logger) -> None:
    # made in the test itself: sys.stderr is the test's capture only from the call on
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)-7s | %(message)s"))
    logger.addHandler(handler)


def test_console_log_lines_go_to_the_file_while_diverted(
    console_logger: logging.Logger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    to_stderr(console_logger)
    path = tmp_path / "logs" / "t.log"
    with PrefectLogFile(path):
        console_logger.info("Created task run 'export-batch-1'")
    console_logger.info("after the block")
    err = capsys.readouterr().err
    assert "Created task run" not in err and "after the block" in err
    assert path.read_text() == "INFO    | Created task run 'export-batch-1'\n"


def test_without_restore_the_file_keeps_the_lines_after_the_block(
    console_logger: logging.Logger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    to_stderr(console_logger)
    path = tmp_path / "t.log"
    with PrefectLogFile(path, restore=False) as diverted:
        pass
    console_logger.info("Stopping temporary server")
    assert "Stopping" not in capsys.readouterr().err and "Stopping temporary server" in path.read_text()
    diverted.restore = True
    diverted.__exit__(None, None, None)  # give this test process its handlers back
