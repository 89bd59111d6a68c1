"""A fingerprint's plan as the page shows it: the tree (node, relation, index, estimated rows,
cost, actual rows when ANALYZE ran), the nodes with findings marked and the findings listed
first. Read by the one plan reader, `exporter.plan`; a plan it cannot read is shown raw.

Reading and rendering a large plan costs milliseconds, so the HTML is kept per fingerprint
(at most `MAX_ENTRIES`, `MAX_BYTES`, the least recently shown forgotten first), and made again
only when the log holds a new plan for it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from html import escape
from typing import Any

from exporter.plan import Finding, Node, Plan, read
from exporter.slowlog.aggregates import PlanHeld

MAX_ENTRIES = 100
MAX_BYTES = 16 * 1024 * 1024  # the rendered HTML, and the plans it was made from
RAW_SHOWN = 64 * 1024  # characters of a plan shown raw


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _node_html(node: Node, marked: dict[int, list[Finding]]) -> str:
    found = marked.get(id(node), [])
    parts = [f'<span class="node">{escape(node.label())}</span>']
    parts.append(
        f' <span class="cost">cost {node.startup_cost:.2f}..{node.total_cost:.2f},'
        f" rows {_number(node.estimated_rows)}</span>"
    )
    if node.actual_rows is not None:
        parts.append(
            f' <span class="actual">actual rows {_number(node.actual_rows)},'
            f" loops {node.loops}</span>"
        )
    for key, condition in node.conditions:
        parts.append(f'<div class="cond">{escape(key)}: {escape(condition)}</div>')
    if node.spill:
        parts.append(f'<div class="cond">Spilled: {escape(node.spill)}</div>')
    for finding in found:
        parts.append(f'<div class="finding">&#9888; {escape(finding.message)}</div>')
    children = "".join(_node_html(child, marked) for child in node.children)
    if children:
        parts.append(f"<ul>{children}</ul>")
    css = ' class="flagged"' if found else ""
    return f"<li{css}>{''.join(parts)}</li>"


def plan_html(plan: Plan, summary: str | None) -> str:
    marked: dict[int, list[Finding]] = {}
    for finding in plan.findings:
        marked.setdefault(id(finding.node), []).append(finding)
    if plan.findings:
        items = "".join(f"<li>{escape(f.message)}</li>" for f in plan.findings)
        findings = f'<ul class="findings">{items}</ul>'
    else:
        findings = '<p class="muted">No findings in this plan.</p>'
    generic = ""
    if summary and "[generic plan" in summary:
        generic = '<p class="muted">Generic plan: the parameter values were not known.</p>'
    return f'{findings}{generic}<ul class="plan">{_node_html(plan.root, marked)}</ul>'


def raw_html(raw: Any, problem: str) -> str:
    try:
        shown = json.dumps(raw, indent=1, default=str)
    except (TypeError, ValueError, RecursionError):
        shown = repr(raw)
    if len(shown) > RAW_SHOWN:
        shown = shown[:RAW_SHOWN] + f"\n...[cut: {len(shown)} characters in all]"
    return (
        f'<p class="warn">This plan could not be read ({escape(problem)}); as captured:</p>'
        f'<pre class="raw">{escape(shown)}</pre>'
    )


def render_held(held: PlanHeld) -> str:
    if held.raw is None:
        return f'<p class="muted">{escape(held.summary or "No plan captured.")}</p>'
    try:
        plan = read(held.raw, held.sizes)
    except (ValueError, RecursionError) as exc:
        return raw_html(held.raw, str(exc))
    return plan_html(plan, held.summary)


class PlanViews:
    """The rendered plan of each (database, fingerprint), bounded."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self._max_entries, self._max_bytes = max_entries, max_bytes
        # key -> (the plan it was made from, the HTML, bytes)
        self._views: OrderedDict[tuple[str, str], tuple[Any, str, int]] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()

    def html(self, key: tuple[str, str], held: PlanHeld) -> str:
        if held.raw is None:  # a summary alone costs nothing to show
            return render_held(held)
        with self._lock:
            found = self._views.get(key)
            if found is not None and found[0] is held.raw:
                self._views.move_to_end(key)
                return found[1]
        shown = render_held(held)
        size = held.bytes + sys.getsizeof(shown)
        with self._lock:
            old = self._views.pop(key, None)
            if old is not None:
                self.bytes -= old[2]
            if size <= self._max_bytes:
                self._views[key] = (held.raw, shown, size)
                self.bytes += size
            while len(self._views) > self._max_entries or self.bytes > self._max_bytes:
                self.bytes -= self._views.popitem(last=False)[1][2]
        return shown
