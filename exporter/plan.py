"""The one reader of PostgreSQL plans (`EXPLAIN (FORMAT JSON)`, with or without ANALYZE and
BUFFERS): a typed tree, the findings a developer can act on, and a readable text form.

`read(raw, sizes)` builds the tree and reads its findings. `sizes` are the relations' row
counts as the statistics know them (`pg_class.reltuples`, see RELATION_ROWS): the planner's row
figure for a scan is after its filter, so it cannot say how large the table is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

LARGE_RELATION_ROWS = 1000  # a sequential scan of a table above this many rows is worth naming
MISESTIMATE_FACTOR = 10  # actual rows this many times above or below the estimate
NESTED_LOOP_ROWS = 1000  # outer rows above which a nested loop runs its inner side too often

_T = TypeVar("_T")

# The relations' row counts, for `findings`; `{names}` is the driver's placeholder for a text[].
RELATION_ROWS = (
    "SELECT relname, max(reltuples) AS rows FROM pg_class"
    " WHERE relname = ANY(CAST({names} AS text[])) GROUP BY relname"
)

_CONDITIONS = ("Index Cond", "Recheck Cond", "Hash Cond", "Merge Cond", "Join Filter", "Filter")


@dataclass(frozen=True)
class Node:
    node_type: str
    estimated_rows: float  # per loop, as the planner guessed
    startup_cost: float
    total_cost: float
    operation: str | None = None  # of a ModifyTable node: "Insert", "Update", "Delete", "Merge"
    relation: str | None = None
    index: str | None = None
    conditions: tuple[tuple[str, str], ...] = ()  # ("Filter", "(k = 5)"), ("Index Cond", ...)
    rows_removed: float | None = None  # by the filter, per loop (ANALYZE)
    actual_rows: float | None = None  # per loop (ANALYZE)
    loops: int | None = None  # (ANALYZE)
    shared_hit_blocks: int | None = None  # (BUFFERS)
    shared_read_blocks: int | None = None  # (BUFFERS)
    spill: str | None = None  # how a sort or hash went to disk, e.g. "external merge, 1400kB"
    children: tuple[Node, ...] = ()

    @property
    def filter(self) -> str | None:
        return next((text for key, text in self.conditions if key == "Filter"), None)

    def walk(self) -> Iterator[Node]:
        """This node, then its descendants, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def analyzed(self) -> bool:
        return self.loops is not None

    @property
    def total_rows(self) -> float:
        """Rows out of this node over all its loops (actual with ANALYZE, else estimated)."""
        if self.actual_rows is not None and self.loops is not None:
            return self.actual_rows * self.loops
        return self.estimated_rows

    def label(self) -> str:
        name = self.operation or self.node_type  # "Update on ledger", as psql shows it
        if self.index:
            name += f" using {self.index}"
        if self.relation:
            name += f" on {self.relation}"
        return name


@dataclass(frozen=True)
class Finding:
    kind: str  # "seq_scan", "index_filter", "misestimate", "spill", "nested_loop"
    node: Node
    message: str  # one line for a developer: what, where, and what to look at
    short: str  # its part of the one-line summary: "seq scan on ledger_entries (~50000 rows)"


@dataclass(frozen=True)
class Plan:
    root: Node
    findings: tuple[Finding, ...] = ()
    planning_ms: float | None = None
    execution_ms: float | None = None  # (ANALYZE)
    raw: Any = None  # the JSON as PostgreSQL gave it

    def nodes(self) -> Iterator[Node]:
        return self.root.walk()

    def with_sizes(self, sizes: Mapping[str, float]) -> Plan:
        """The same plan, its findings read knowing the relations' row counts."""
        return replace(self, findings=findings(self.root, sizes))

    def seq_scanned(self) -> list[str]:
        """The relations the plan reads with a sequential scan."""
        return sorted(
            {n.relation for n in self.nodes() if n.node_type == "Seq Scan" and n.relation}
        )

    def summary(self) -> str:
        """One line: the top node, then each finding's short form."""
        root = self.root
        parts = [f"{root.node_type} (cost {root.total_cost}, rows {_number(root.estimated_rows)})"]
        parts.extend(finding.short for finding in self.findings)
        return "; ".join(parts)

    def render(self) -> str:
        """The tree as text, one node a line (with its filter and buffers below it), then the
        findings."""
        lines: list[str] = []
        _render(self.root, 0, lines)
        if self.planning_ms is not None:
            lines.append(f"Planning: {self.planning_ms:.3f} ms")
        if self.execution_ms is not None:
            lines.append(f"Execution: {self.execution_ms:.3f} ms")
        if self.findings:
            lines.append("Findings:")
            lines.extend(f"  - {finding.message}" for finding in self.findings)
        else:
            lines.append("Findings: none")
        return "\n".join(lines)

    __str__ = render


def read(raw: Any, sizes: Mapping[str, float] | None = None) -> Plan:
    """The plan from `EXPLAIN (FORMAT JSON)` output (the JSON text or its parsed list), with
    its findings. ValueError, saying what is wrong, when it is not such output."""
    document = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    if not isinstance(document, list) or not document or not isinstance(document[0], dict):
        raise _not_a_plan("a list holding one object")
    top = document[0]
    root = _node(top.get("Plan"))
    return Plan(
        root=root,
        findings=findings(root, sizes or {}),
        planning_ms=_optional(top, "Planning Time", float),
        execution_ms=_optional(top, "Execution Time", float),
        raw=document,
    )


def findings(root: Node, sizes: Mapping[str, float]) -> tuple[Finding, ...]:
    """What a developer can act on, in plan order (top first)."""
    found: list[Finding] = []
    for node in root.walk():
        for check in (_seq_scan, _index_filter, _misestimate, _spill, _nested_loop):
            finding = check(node, sizes)
            if finding is not None:
                found.append(finding)
    return tuple(found)


def _seq_scan(node: Node, sizes: Mapping[str, float]) -> Finding | None:
    if node.node_type != "Seq Scan" or node.relation is None:
        return None
    rows = sizes.get(node.relation, -1)  # reltuples is -1 for a table never analysed
    if rows < 0 and node.analyzed:
        rows = (node.actual_rows or 0) + (node.rows_removed or 0)
    if rows < LARGE_RELATION_ROWS:
        return None
    scan = f"{node.relation} (~{_number(rows)} rows)"
    message = f"sequential scan of {scan}"
    if node.filter:
        message += f" with Filter {node.filter}: an index on those columns may help"
    return Finding("seq_scan", node, message, f"seq scan on {scan}")


def _index_filter(node: Node, sizes: Mapping[str, float]) -> Finding | None:
    # The index finds the rows, then a filter throws most of them away: the index conditions
    # cover only part of what the statement asks.
    if node.index is None and node.node_type != "Bitmap Heap Scan":
        return None
    if node.filter is None or node.rows_removed is None or not node.loops:
        return None
    removed, kept = node.rows_removed * node.loops, node.total_rows
    if removed < LARGE_RELATION_ROWS or removed <= kept:
        return None
    message = (
        f"{node.label()} fetched {_number(removed + kept)} rows and its Filter {node.filter}"
        f" removed {_number(removed)}: an index that covers those columns too may help"
    )
    return Finding("index_filter", node, message, f"filter after index on {node.relation}")


def _misestimate(node: Node, sizes: Mapping[str, float]) -> Finding | None:
    # Where the estimate went wrong, not every node above it that inherited the error.
    if not _misestimated(node) or any(_misestimated(child) for child in node.children):
        return None
    message = (
        f"{node.label()}: estimated {_number(node.estimated_rows)} rows, got"
        f" {_number(node.actual_rows or 0)}: statistics may be stale (ANALYZE the table) or the"
        " columns correlated (CREATE STATISTICS)"
    )
    return Finding("misestimate", node, message, f"misestimate at {node.label()}")


def _misestimated(node: Node) -> bool:
    if node.actual_rows is None or not node.loops:  # no ANALYZE, or never executed
        return False
    # Both per loop; at least 1 so that "estimated 1, got 0" is not a factor of infinity.
    estimated, actual = max(node.estimated_rows, 1.0), max(node.actual_rows, 1.0)
    return max(estimated, actual) / min(estimated, actual) > MISESTIMATE_FACTOR


def _spill(node: Node, sizes: Mapping[str, float]) -> Finding | None:
    if node.spill is None:
        return None
    message = f"{node.label()} spilled to disk ({node.spill}): raise work_mem or shrink its input"
    return Finding("spill", node, message, f"{node.label()} spilled to disk")


def _nested_loop(node: Node, sizes: Mapping[str, float]) -> Finding | None:
    if node.node_type != "Nested Loop" or not node.children:
        return None
    outer_rows = node.children[0].total_rows
    if outer_rows <= NESTED_LOOP_ROWS:
        return None
    inner = node.children[-1].label()
    message = (
        f"nested loop runs {inner} for each of {_number(outer_rows)} rows: an index for the"
        " join condition, or a hash join, may serve better"
    )
    short = f"nested loop over {_number(outer_rows)} rows"
    return Finding("nested_loop", node, message, short)


def _node(data: Any) -> Node:
    if not isinstance(data, dict):
        raise _not_a_plan("a plan node (an object)")
    children = _optional(data, "Plans", list) or []
    return Node(
        node_type=_required(data, "Node Type", str),
        estimated_rows=_required(data, "Plan Rows", float),
        startup_cost=_required(data, "Startup Cost", float),
        total_cost=_required(data, "Total Cost", float),
        operation=_optional(data, "Operation", str)
        if data.get("Node Type") == "ModifyTable"
        else None,
        relation=_optional(data, "Relation Name", str),
        index=_optional(data, "Index Name", str),
        conditions=tuple((key, _required(data, key, str)) for key in _CONDITIONS if key in data),
        rows_removed=_optional(data, "Rows Removed by Filter", float),
        actual_rows=_optional(data, "Actual Rows", float),
        loops=_optional(data, "Actual Loops", int),
        shared_hit_blocks=_optional(data, "Shared Hit Blocks", int),
        shared_read_blocks=_optional(data, "Shared Read Blocks", int),
        spill=_spill_of(data),
        children=tuple(_node(child) for child in children),
    )


def _optional(data: Mapping[str, Any], key: str, kind: type[_T]) -> _T | None:
    return _required(data, key, kind) if key in data else None


def _required(data: Mapping[str, Any], key: str, kind: type[_T]) -> _T:
    """`data[key]` when it is a `kind` (an int where a float is wanted; never a bool)."""
    if key not in data:
        raise _not_a_plan(f"{key!r} in every node")
    value = data[key]
    wanted: tuple[type, ...] = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise _not_a_plan(f"{key!r} to be {kind.__name__}, not {value!r}")
    return cast("_T", value)


def _not_a_plan(expected: str) -> ValueError:
    return ValueError(f"not EXPLAIN (FORMAT JSON) output: expected {expected}")


def _spill_of(data: Mapping[str, Any]) -> str | None:
    if _optional(data, "Sort Space Type", str) == "Disk":
        method = _optional(data, "Sort Method", str) or "sort"
        return f"{method}, {_optional(data, 'Sort Space Used', int)}kB"
    hash_batches = _optional(data, "Hash Batches", int) or 1
    if hash_batches > 1:
        return f"{hash_batches} batches"
    aggregate_batches = _optional(data, "HashAgg Batches", int) or 1
    if aggregate_batches > 1:
        return f"{aggregate_batches} batches, {_optional(data, 'Disk Usage', int)}kB"
    return None


def _render(node: Node, depth: int, lines: list[str]) -> None:
    indent = "  " * depth + ("-> " if depth else "")
    line = (
        f"{indent}{node.label()}  (cost={node.startup_cost:.2f}..{node.total_cost:.2f}"
        f" rows={_number(node.estimated_rows)})"
    )
    if node.actual_rows is not None:
        line += f" (actual rows={_number(node.actual_rows)} loops={node.loops})"
    lines.append(line)
    detail = "  " * depth + ("     " if depth else "  ")
    lines.extend(f"{detail}{key}: {text}" for key, text in node.conditions)
    if node.shared_hit_blocks is not None:
        lines.append(
            f"{detail}Buffers: shared hit={node.shared_hit_blocks} read={node.shared_read_blocks}"
        )
    if node.spill:
        lines.append(f"{detail}Spilled: {node.spill}")
    for child in node.children:
        _render(child, depth + 1, lines)


def _number(rows: float) -> str:
    return str(int(rows)) if float(rows).is_integer() else f"{rows:g}"
