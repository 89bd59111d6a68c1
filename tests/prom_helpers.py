"""Helpers for the dashboard, alert and stack tests: the shipped files, PromQL, promtool and a
real Prometheus.

Nothing here imitates Prometheus: expressions are only read to find the metric names they use
and the functions applied to them; whether they parse and what they return is asked of a real
Prometheus (Debian's `prometheus` package; `.ci/run` installs it).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sockets import free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
RULES = DASHBOARDS / "alerts.yml"
RULE_TESTS = DASHBOARDS / "alerts_test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found (apt-get install prometheus; .ci/run does)"
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus/promtool not found (apt-get install prometheus; .ci/run does)",
)

# What Grafana puts in place of its built-in variables when the test evaluates a panel: the
# test's Prometheus scrapes every second, so short windows already hold many samples.
BUILTINS = {"$__rate_interval": "20s", "$__range": "1m", "$__interval": "5s"}


# --- The shipped files ---------------------------------------------------------------------


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass(frozen=True)
class PanelTarget:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def where(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


# Series that only a primary with a standby or a replication slot has. The demo's embedded
# server has neither, so the panels reading them are proven against a real primary and its
# replica instead (`tests/test_stack_e2e_replication.py`).
REPLICATION_SERIES = frozenset(
    {
        "pg_stat_replication_replay_lag_seconds",
        "pg_stat_replication_replay_lag_bytes",
        "pg_replication_slot_retained_wal_bytes",
    }
)


def needs_replication(target: PanelTarget) -> bool:
    return bool(metric_names(target.expr).plain & REPLICATION_SERIES)


def panel_targets() -> list[PanelTarget]:
    found = []
    for path in dashboard_files():
        dashboard = load_dashboard(path)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append(
                    PanelTarget(path.name, panel["title"], target["refId"], target["expr"])
                )
    return found


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


# --- Reading PromQL ------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NAME_MATCHER = re.compile(r'__name__\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
_CALL = re.compile(r"\b(rate|irate|increase|histogram_quantile|deriv|delta)\s*\(")


def _top_level_alternatives(pattern: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in pattern:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


@dataclass(frozen=True)
class Names:
    """Metric names an expression reads: plain names, and `__name__` regexes (each top-level
    alternative of which must match at least one real name)."""

    plain: frozenset[str]
    patterns: tuple[str, ...]


def metric_names(expr: str) -> Names:
    patterns: list[str] = []
    for op, value in _NAME_MATCHER.findall(expr):
        patterns.extend(_top_level_alternatives(value) if op == "=~" else [re.escape(value)])
    stripped = _STRING.sub('""', expr)
    stripped = re.sub(r"\{[^}]*\}", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    stripped = _GROUPING.sub(" ", stripped)
    plain = {name for name in _IDENTIFIER.findall(stripped) if name.lower() not in _KEYWORDS}
    return Names(frozenset(plain), tuple(patterns))


def _argument(expr: str, open_paren: int) -> str:
    """The text between the parenthesis at `open_paren` and its partner."""
    depth = 0
    for position in range(open_paren, len(expr)):
        if expr[position] == "(":
            depth += 1
        elif expr[position] == ")":
            depth -= 1
            if depth == 0:
                return expr[open_paren + 1 : position]
    raise ValueError(f"unbalanced parentheses in {expr!r}")


def function_arguments(expr: str) -> list[tuple[str, str]]:
    """(function, argument text) for every rate-like call and histogram_quantile."""
    return [(m.group(1), _argument(expr, m.end() - 1)) for m in _CALL.finditer(expr)]


def grafana_regex(value: str) -> str:
    """`value` as Grafana puts a regex variable into a query: escaped, inside a PromQL string."""
    return re.escape(value).replace("\\", "\\\\")


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variables replaced as it would for the given values (longest names first, so
    that `$__rate_interval` is never read as `$__range` + text)."""
    values = {**BUILTINS, **{f"${name}": value for name, value in variables.items()}}
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    return expr


# --- The exposition ------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposition:
    """Families (name -> type) and sample names of one /metrics body in text format 0.0.4."""

    types: dict[str, str]
    samples: frozenset[str]

    @classmethod
    def parse(cls, body: str) -> Exposition:
        types: dict[str, str] = {}
        samples = set()
        for line in body.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                types[name] = kind
            elif line and not line.startswith("#"):
                samples.add(re.split(r"[{ ]", line, maxsplit=1)[0])
        return cls(types, frozenset(samples))

    def names(self) -> set[str]:
        """Every series name the exporter exposes (histogram parts included)."""
        found = set(self.samples)
        for name, kind in self.types.items():
            found.add(name)
            if kind == "histogram":
                found |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        return found

    def kind_of(self, series: str) -> str | None:
        """The type of the family a series name belongs to (`x_bucket` -> histogram)."""
        if series in self.types:
            return self.types[series]
        for suffix in ("_bucket", "_count", "_sum"):
            family = series.removesuffix(suffix)
            if family != series and self.types.get(family) in ("histogram", "summary"):
                return self.types[family]
        return None


# --- Processes -----------------------------------------------------------------------------


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> tuple[int, str]:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd
    )
    return result.returncode, result.stdout + result.stderr


def has_finite_value(result: dict[str, Any]) -> bool:
    """A successful query answer with at least one finite number (a scalar or a sample)."""
    if result.get("status") != "success":
        return False
    data = result["data"]
    values = [data["result"][1]] if data["resultType"] == "scalar" else []
    values += [sample["value"][1] for sample in data["result"] if isinstance(sample, dict)]
    return any(math.isfinite(float(value)) for value in values)


class Prometheus:
    """A real Prometheus on a loopback port with its own storage, scraping `targets`."""

    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode(params)
        status, body = http_get(f"{self.url}/api/v1/{path}?{query}")
        data: dict[str, Any] = json.loads(body)
        data["http_status"] = status
        return data

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def wait_for_data(
        self, targets: list[PanelTarget], variables: dict[str, str], seconds: float
    ) -> list[PanelTarget]:
        """Evaluate the targets (with the dashboard variables substituted) until each has
        returned a finite value or `seconds` have passed: the ones still without data."""
        deadline = time.monotonic() + seconds
        pending = targets
        while pending and time.monotonic() < deadline:
            time.sleep(1)
            pending = [
                target
                for target in pending
                if not has_finite_value(self.query(substitute(target.expr, variables)))
            ]
        return pending

    def wait_for_value(self, expr: str, seconds: float) -> bool:
        """Whether `expr` returns a finite value within `seconds` (a recording rule's output
        appears one evaluation after the data it reads, on Prometheus's own schedule)."""
        deadline = time.monotonic() + seconds
        while not has_finite_value(self.query(expr)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def without_data(
        self, targets: list[PanelTarget], variables: dict[str, str]
    ) -> list[tuple[str, Any]]:
        """(where, answer) of each target that does not return a finite value, a query
        Prometheus rejects included."""
        answers = [(t.where, self.query(substitute(t.expr, variables))) for t in targets]
        return [(where, answer) for where, answer in answers if not has_finite_value(answer)]

    def rule_problems(self, seconds: float = 10) -> list[tuple[str, str]]:
        """(rule, problem) for each of our rules whose expression Prometheus rejects, that it
        has not loaded (or loaded beside ours), or that is unhealthy once evaluated (waiting
        up to `seconds` for every rule's first evaluation)."""
        ours = {rule.get("alert") or rule["record"]: rule["expr"] for rule in rules()}
        problems = []
        for name, expr in ours.items():
            answer = self.query(expr)
            if answer["status"] != "success":
                problems.append((name, str(answer.get("error"))))
        deadline = time.monotonic() + seconds
        while True:
            groups = self.api("rules")["data"]["groups"]
            loaded: list[dict[str, Any]] = [r for g in groups for r in g["rules"]]
            evaluated = all(r.get("lastEvaluation", "").startswith("2") for r in loaded)
            if evaluated or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if sorted(r["name"] for r in loaded) != sorted(ours):
            problems.append(("*", f"loaded {sorted(r['name'] for r in loaded)}"))
        problems += [(r["name"], str(r.get("lastError"))) for r in loaded if r["health"] != "ok"]
        return problems

    def series(self, selector: str) -> list[dict[str, str]]:
        data = self.api("series", **{"match[]": selector, "start": str(time.time() - 300)})
        assert data["status"] == "success", data
        result: list[dict[str, str]] = data["data"]
        return result


@contextmanager
def running_prometheus(
    targets: list[str], job: str, rule_files: list[Path], interval: str = "1s"
) -> Iterator[Prometheus]:
    assert PROMETHEUS is not None
    with tempfile.TemporaryDirectory(prefix="dbx-prom-") as tmp:
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]},
            ],
        }
        config_file = Path(tmp) / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        port = free_port()
        log = (Path(tmp) / "prometheus.log").open("w")
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={Path(tmp) / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http_get(f"{url}/-/ready", timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    output = (Path(tmp) / "prometheus.log").read_text()
                    raise AssertionError(f"prometheus did not become ready:\n{output}")
                time.sleep(0.1)
            yield Prometheus(url)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
