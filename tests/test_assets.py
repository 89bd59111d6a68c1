"""`db-exporter assets DIR`: the shipped ops files written out, runbook links made absolute, and
every bad input refused in one line before anything is written."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prom_helpers import DASHBOARDS, ROOT, needs_promtool, promtool
from subprocesses import assert_one_line_error, run_exporter

from exporter.assets import DEFAULT_RUNBOOK_BASE_URL, AssetsError, rendered, shipped

BASE = "https://wiki.example.com/ops/db-exporter-runbooks"


def tree(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def runbook_urls(rules_text: bytes) -> dict[str, str]:
    rules = yaml.safe_load(rules_text)
    return {
        rule["alert"]: rule["annotations"]["runbook_url"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_writes_the_repository_files_with_the_default_runbook_links(tmp_path: Path) -> None:
    out = tmp_path / "ops"
    result = run_exporter("assets", str(out))
    assert result.returncode == 0, result.stderr
    written = tree(out)
    assert {"dashboards/overview.json", "dashboards/alerts.yml", "dashboards/alerts_test.yml",
            "docs/runbooks.md", "config/exporter.yaml", "config/prometheus.yml",
            "config/grafana/provisioning/datasources/prometheus.yml"} <= set(written)  # fmt: skip
    # The committed files, byte for byte: their links are the documented default already.
    assert written == {path: (ROOT / path).read_bytes() for path in written}
    assert result.stdout.splitlines() == [f"wrote {out / path}" for path in written]
    for name, url in runbook_urls(written["dashboards/alerts.yml"]).items():
        assert url == f"{DEFAULT_RUNBOOK_BASE_URL}#{name.lower()}"


@needs_promtool
def test_a_runbook_base_url_moves_every_link_and_the_rule_tests_still_pass(tmp_path: Path) -> None:
    result = run_exporter("assets", str(tmp_path), "--runbook-base-url", BASE)
    assert result.returncode == 0, result.stderr
    rules = (tmp_path / "dashboards" / "alerts.yml").read_bytes()
    urls = runbook_urls(rules)
    assert len(urls) > 1
    assert all(url == f"{BASE}#{name.lower()}" for name, url in urls.items())
    assert DEFAULT_RUNBOOK_BASE_URL.encode() not in rules
    # The promtool tests expect the same annotations: they pass in the written directory.
    code, output = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path / "dashboards")
    assert code == 0, output


def test_force_overwrites_the_shipped_files_and_leaves_others_alone(tmp_path: Path) -> None:
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "dashboards" / "overview.json").write_text("edited by hand")
    (tmp_path / "notes.txt").write_text("mine")
    result = run_exporter("assets", str(tmp_path), "--force")
    assert result.returncode == 0, result.stderr
    overview = (tmp_path / "dashboards" / "overview.json").read_bytes()
    assert overview == (DASHBOARDS / "overview.json").read_bytes()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def refused(args: list[str], message: str) -> None:
    result = run_exporter("assets", *args)
    assert_one_line_error(result.returncode, result.stderr, f"db-exporter: error: {message}")
    assert result.stdout == ""


def test_a_directory_that_is_not_empty_is_refused_without_force(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    refused([str(tmp_path)], f"{tmp_path}: exists and is not empty (--force overwrites)")
    assert tree(tmp_path) == {"notes.txt": b"mine"}


def test_a_file_as_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "ops"
    target.write_text("a file")
    refused([str(target), "--force"], f"{target}: exists and is not a directory")
    assert tree(tmp_path) == {"ops": b"a file"}


@pytest.mark.parametrize(
    "url",
    ["docs/runbooks.md", "ftp://example.com/runbooks", "https://example.com/r.md#section",
     "https:///runbooks.md", "https://example.com/{{ $labels.database }}", ""],
)  # fmt: skip
def test_an_invalid_runbook_base_url_is_refused(tmp_path: Path, url: str) -> None:
    target = tmp_path / "ops"
    message = f"--runbook-base-url {url!r}: not an absolute http(s) URL without a #fragment"
    refused([str(target), "--runbook-base-url", url], message)
    assert not target.exists()


# Each example renders and parses every shipped rule file: its time follows their size and the
# machine's load, which is not what this test is about.
@settings(deadline=None)
@given(st.text(max_size=80) | st.builds("https://example.com/{}".format, st.text(max_size=40)))
def test_any_base_url_is_refused_in_one_line_or_makes_valid_links(base: str) -> None:
    refused: AssetsError | None = None
    try:
        files = rendered(base)
    except AssetsError as error:
        refused = error
    if refused is not None:
        assert str(refused).startswith(f"--runbook-base-url {base!r}: ")
        assert "\n" not in str(refused)
        return
    for name, url in runbook_urls(files["dashboards/alerts.yml"]).items():
        assert url == f"{base}#{name.lower()}"
    expected = yaml.safe_load(files["dashboards/alerts_test.yml"])
    for case in expected["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts") or []:
                assert alert["exp_annotations"]["runbook_url"].startswith(f"{base}#")


def test_the_wheel_ships_exactly_the_files_the_command_writes() -> None:
    """The package-data patterns (what the wheel copies through the links) name the same files
    as the command writes from a checkout; .ci/install-check compares the installed output."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["exporter.assets"]
    packaged = {p.relative_to(ROOT).as_posix() for pattern in patterns for p in ROOT.glob(pattern)}
    assert set(shipped()) == packaged
