"""What a user expects of any command line: `--version`, global flags on either side of the
command, a bad flag as one line, and a pipe closed early (`| head`) ending quietly."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from importlib.metadata import version
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from subprocesses import first_line_then_close, log_records, run_exporter

from exporter._version import __version__
from exporter.cli import parse_args


def test_version_flag_and_attribute_name_the_installed_distribution() -> None:
    assert __version__ == version("db-exporter")
    result = run_exporter("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"db-exporter {__version__}\n",
        "",
    )


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--debug", "check-config", "{missing}"], id="before"),
        pytest.param(["check-config", "--debug", "{missing}"], id="after"),
        pytest.param(["check-config", "{missing}", "--debug"], id="last"),
        pytest.param(["serve", "--debug", "--config", "{missing}"], id="serve"),
    ],
)
def test_debug_works_before_and_after_the_command(tmp_path: Path, argv: list[str]) -> None:
    missing = str(tmp_path / "absent.yaml")
    result = run_exporter(*(arg.format(missing=missing) for arg in argv))
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1] == f"db-exporter: error: {missing}: no such file"


@pytest.mark.parametrize(
    ("flags", "fmt"),
    [
        pytest.param(["--log-format", "json", "check-config"], "json", id="before"),
        pytest.param(["check-config", "--log-format", "json"], "json", id="after"),
        pytest.param(["--log-format", "json", "check-config", "--log-format", "text"], "text",
                     id="after-wins"),
    ],
)  # fmt: skip
def test_log_format_works_before_and_after_the_command(
    tmp_path: Path, flags: list[str], fmt: str
) -> None:
    missing = str(tmp_path / "absent.yaml")
    result = run_exporter(*flags, missing)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    if fmt == "text":
        assert line == f"db-exporter: error: {missing}: no such file"
    else:
        [record] = log_records([line], "json")
        assert (record["level"], record["message"]) == ("ERROR", f"{missing}: no such file")


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["--log-level", "LOUD", "check-config", "x.yaml"], "'LOUD'"),
        (["check-config", "x.yaml", "--log-format", "xml"], "'xml'"),
        (["check-config", "x.yaml", "--colour"], "--colour"),
        (["launch"], "'launch'"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(argv: list[str], culprit: str) -> None:
    result = run_exporter(*argv)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("db-exporter: error: ")
    assert culprit in line


TOKENS = st.sampled_from(
    ["demo", "serve", "check-config", "slowlog", "--debug", "--log-level", "--log-format",
     "--listen", "--config", "--top", "json", "text", "info", "DEBUG", "-", "x.yaml",
     "explain", "--file", "--database", "--no-analyze", "--timeout", "SELECT 1",
     "test-report", "compare"]
)  # fmt: skip


@given(st.lists(TOKENS | st.text(max_size=12), max_size=6))
def test_any_command_line_parses_or_is_one_error_line(argv: list[str]) -> None:
    """The parser alone (no command runs): a namespace with every global flag, or an exit
    with one error line (0 for --help and --version, even abbreviated); never a traceback."""
    errors = io.StringIO()
    with redirect_stderr(errors), redirect_stdout(io.StringIO()):
        try:
            args = parse_args(argv)
        except SystemExit as stop:
            code = stop.code
        else:
            assert {"debug", "log_level", "log_format", "command"} <= vars(args).keys()
            return
    assert code == 0 or (code, len(errors.getvalue().splitlines())) == (2, 1)


def test_check_config_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    # Enough databases that the effective configuration is far larger than a pipe's buffer.
    databases = "".join(
        f"  - name: db{i}\n    dsn: postgresql://app@db/app{i}\n" for i in range(400)
    )
    config = tmp_path / "exporter.yaml"
    config.write_text(f"databases:\n{databases}")
    first, code, errors = first_line_then_close("check-config", str(config))
    assert first == f"# {config}: valid; effective configuration (passwords masked)\n"
    assert (code, errors) == (1, "")


def test_slowlog_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    log = tmp_path / "slow.jsonl"
    with log.open("w") as lines:
        for i in range(20_000):
            record = {"kind": "slow_query", "fingerprint": f"{i:016x}", "operation": "SELECT",
                      "table": "t", "sql": f"SELECT {i}", "duration_ms": i}  # fmt: skip
            lines.write(json.dumps(record) + "\n")
    first, code, errors = first_line_then_close("slowlog", str(log), "--top", "20000")
    assert first == "Slow statements, costliest first\n"
    assert (code, errors) == (1, "")
