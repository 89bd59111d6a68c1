"""The alert rules: promtool's own checks and unit tests, and the conventions every alert keeps
(severity, summary, description, a runbook section that exists)."""

from __future__ import annotations

import re

import yaml
from prom_helpers import (
    DASHBOARDS,
    RULE_TESTS,
    RULES,
    RUNBOOKS,
    alerts,
    needs_promtool,
    promtool,
    rules,
)

from exporter.assets import DEFAULT_RUNBOOK_BASE_URL

SEVERITIES = {"critical", "warning", "info"}


@needs_promtool
def test_promtool_check_rules() -> None:
    code, output = promtool("check", "rules", str(RULES))
    assert code == 0, output
    assert f"SUCCESS: {len(rules())} rules found" in output


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    code, output = promtool("test", "rules", RULE_TESTS.name, cwd=DASHBOARDS)
    assert code == 0, output
    assert output.strip().splitlines()[-1].strip() == "SUCCESS"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert firing == names
    assert quiet == names


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_has_severity_summary_description_and_a_runbook_section() -> None:
    anchors = _anchors(RUNBOOKS.read_text(encoding="utf-8"))
    for rule in alerts():
        name = rule["alert"]
        assert re.fullmatch(r"DBExporter[A-Z][A-Za-z]+", name)
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["summary"].strip(), name
        assert annotations["description"].strip(), name
        url = annotations["runbook_url"]
        assert url == f"{DEFAULT_RUNBOOK_BASE_URL}#{name.lower()}", (name, url)
        assert name.lower() in anchors, f"docs/runbooks.md has no section {name}"
        section = RUNBOOKS.read_text(encoding="utf-8").split(f"## {name}\n", 1)[1]
        section = section.split("\n## ", 1)[0]
        assert "**Check.**" in section, name
        assert "**Do.**" in section, name


def test_the_alerts_the_issue_asks_for() -> None:
    assert {rule["alert"]: rule["labels"]["severity"] for rule in alerts()} == {
        "DBExporterDatabaseDown": "critical",
        "DBExporterCollectorFailing": "warning",
        "DBExporterPoolSaturated": "warning",
        "DBExporterPoolTimeouts": "warning",
        "DBExporterQueryLatencyHigh": "warning",
        "DBExporterSlowQueryBurst": "warning",
        "DBExporterNPlusOneBurst": "warning",
        "DBExporterSlowQueryLogDropping": "warning",
        "DBExporterInvalidIndex": "warning",
        "DBExporterLargeUnusedIndex": "info",
        "DBExporterConnectionLeak": "warning",
        "DBExporterMigrationsPending": "warning",
        "DBExporterSchemaDrift": "warning",
        "DBExporterBackupTooOld": "critical",
        "DBExporterConnectionsNearLimit": "warning",
        "DBExporterReplicationLag": "warning",
        "DBExporterInactiveSlotRetainingWAL": "warning",
        "DBExporterWraparoundApproaching": "warning",
        "DBExporterTooManyRequestedCheckpoints": "warning",
        "DBExporterArchiverFailing": "warning",
    }


def test_recording_rules_follow_the_naming_convention() -> None:
    for rule in rules():
        if "record" in rule:
            level, metric, operation = rule["record"].split(":")
            assert all((level, metric, operation)), rule["record"]
            assert "alert" not in rule
            assert "for" not in rule
