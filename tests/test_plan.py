"""exporter.plan, the one plan reader, on plans the real PostgreSQL gives for tables built to
show each finding (tests/plan_tables.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from plan_tables import ITEMS_ROWS, settings
from sqlalchemy import Connection, Engine

from exporter.plan import Finding, Plan, read


@pytest.fixture
def conn(plan_engine: Engine) -> Iterator[Connection]:
    with plan_engine.connect() as conn:
        yield conn


def explained(conn: Connection, sql: str, analyze: bool = True) -> Any:
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    return conn.exec_driver_sql(f"EXPLAIN ({options}) {sql}").scalar_one()


def kinds(plan: Plan) -> list[str]:
    return [finding.kind for finding in plan.findings]


def only(plan: Plan, kind: str) -> Finding:
    (finding,) = (f for f in plan.findings if f.kind == kind)
    return finding


def test_a_filtered_seq_scan_of_a_large_table_names_the_filter(conn: Connection) -> None:
    plan = read(explained(conn, "SELECT * FROM items WHERE s < '1'"))
    scan = plan.root
    assert (scan.node_type, scan.relation, scan.filter) == (
        "Seq Scan",
        "items",
        "(s < '1'::text)",
    )
    assert scan.loops == 1
    assert scan.actual_rows is not None
    assert scan.rows_removed is not None
    assert scan.actual_rows + scan.rows_removed == ITEMS_ROWS
    assert scan.shared_hit_blocks is not None
    assert scan.shared_read_blocks is not None
    assert plan.execution_ms is not None
    assert plan.planning_ms is not None
    finding = only(plan, "seq_scan")
    assert finding.node is scan
    assert finding.message == (
        f"sequential scan of items (~{ITEMS_ROWS} rows) with Filter (s < '1'::text):"
        " an index on those columns may help"
    )
    assert finding.short == f"seq scan on items (~{ITEMS_ROWS} rows)"


def test_without_analyze_the_table_size_comes_from_the_statistics(conn: Connection) -> None:
    plan = read(explained(conn, "SELECT * FROM items WHERE s < '1'", analyze=False))
    assert plan.root.actual_rows is None
    assert plan.execution_ms is None
    assert plan.findings == ()  # the scan's own rows (after its filter) say nothing of the table
    sized = plan.with_sizes({"items": ITEMS_ROWS})
    assert kinds(sized) == ["seq_scan"]
    assert (
        plan.summary()
        == f"Seq Scan (cost {plan.root.total_cost}, rows {plan.root.estimated_rows:g})"
    )
    assert sized.summary() == plan.summary() + f"; seq scan on items (~{ITEMS_ROWS} rows)"


def test_small_tables_and_index_scans_are_not_findings(conn: Connection) -> None:
    assert read(explained(conn, "SELECT * FROM tags")).findings == ()
    plan = read(explained(conn, "SELECT * FROM items WHERE id = 7"))
    assert (plan.root.node_type, plan.root.index) == ("Index Scan", "items_pkey")
    assert plan.root.conditions == (("Index Cond", "(id = 7)"),)
    assert plan.findings == ()


def test_an_index_whose_rows_a_filter_mostly_discards_is_a_finding(conn: Connection) -> None:
    with settings(conn, enable_seqscan="off"):
        plan = read(explained(conn, "SELECT * FROM items WHERE bucket < 4 AND s < '1'"))
    finding = only(plan, "index_filter")
    scan = finding.node
    assert scan.relation == "items"
    assert scan.filter == "(s < '1'::text)"
    assert scan.actual_rows is not None
    assert scan.rows_removed is not None
    assert scan.actual_rows + scan.rows_removed == 3999  # ids 1 to 3999 are in buckets 0 to 3
    assert finding.message.endswith(
        f"fetched 3999 rows and its Filter (s < '1'::text) removed {scan.rows_removed:g}:"
        " an index that covers those columns too may help"
    )
    # Where the filter keeps most of what the index found, there is nothing to say.
    with settings(conn, enable_seqscan="off"):
        kept = read(explained(conn, "SELECT * FROM items WHERE bucket < 4 AND s > '1'"))
    assert "index_filter" not in kinds(kept)


def test_an_estimate_off_by_more_than_ten_times_is_a_finding(conn: Connection) -> None:
    plan = read(explained(conn, "SELECT * FROM items WHERE k = 5 AND k2 = 5"))
    finding = only(plan, "misestimate")
    # About 2 (more once rolled-back writes of other tests have grown the table's pages).
    estimated = finding.node.estimated_rows
    assert estimated < 20
    assert finding.node.actual_rows == 200
    assert finding.message.startswith(f"Seq Scan on items: estimated {estimated:g} rows, got 200:")
    # The same plan, unanalysed, cannot tell.
    assert "misestimate" not in kinds(
        read(explained(conn, "SELECT * FROM items WHERE k = 5 AND k2 = 5", analyze=False))
    )


def test_a_sort_spilling_to_disk_is_a_finding(conn: Connection) -> None:
    with settings(conn, work_mem="64kB"):
        plan = read(explained(conn, "SELECT * FROM items ORDER BY s"))
    sort = only(plan, "spill").node
    assert sort.node_type == "Sort"
    assert sort.spill is not None
    assert sort.spill.startswith("external")
    with settings(conn, work_mem="64MB"):
        assert "spill" not in kinds(read(explained(conn, "SELECT * FROM items ORDER BY s")))


def test_a_hash_spilling_to_disk_is_a_finding(conn: Connection) -> None:
    sql = "SELECT * FROM items a JOIN items b ON a.s = b.s"
    with settings(conn, work_mem="64kB", enable_mergejoin="off"):
        plan = read(explained(conn, sql))
    hashed = only(plan, "spill").node
    assert hashed.node_type == "Hash"
    assert hashed.spill is not None
    assert hashed.spill.endswith("batches")


def test_a_nested_loop_over_many_rows_is_a_finding(conn: Connection) -> None:
    sql = "SELECT * FROM items JOIN tags ON tags.id = items.k"
    with settings(conn, enable_hashjoin="off", enable_mergejoin="off"):
        plan = read(explained(conn, sql))
    loop = only(plan, "nested_loop")
    assert loop.node is plan.root
    assert plan.root.node_type == "Nested Loop"
    assert loop.short == f"nested loop over {ITEMS_ROWS} rows"
    assert "for each of 20000 rows" in loop.message


def test_the_readable_tree(conn: Connection) -> None:
    with settings(conn, work_mem="64kB"):
        plan = read(explained(conn, "SELECT * FROM items WHERE k = 5 AND k2 = 5 ORDER BY s"))
    lines = str(plan).splitlines()
    assert str(plan) == plan.render()
    assert lines[0].startswith("Sort  (cost=")
    assert "(actual rows=200 loops=1)" in lines[0]
    assert [line.strip().split("  ")[0] for line in lines if "->" in line] == [
        "-> Seq Scan on items"
    ]
    assert "       Filter: ((k = 5) AND (k2 = 5))" in lines
    assert "  Buffers: shared hit=" in lines[1]
    assert lines[lines.index("Findings:") + 1 :] == [f"  - {f.message}" for f in plan.findings]
    assert kinds(plan) == ["seq_scan", "misestimate"]


def test_the_text_form_of_the_json_reads_the_same(conn: Connection) -> None:
    raw = explained(conn, "SELECT * FROM items WHERE k = 5", analyze=False)
    assert read(json.dumps(raw)).root == read(raw).root


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("[]", "a list holding one object"),
        ({"Plan": {}}, "a list holding one object"),
        ([{"Plans": []}], "a plan node"),
        ([{"Plan": {"Node Type": "Result"}}], "'Plan Rows' in every node"),
        ([{"Plan": {"Node Type": "Result", "Plan Rows": "many"}}], "'Plan Rows' to be float"),
        ([{"Plan": {"Node Type": True}}], "'Node Type' to be str, not True"),
    ],
)
def test_what_is_not_a_plan_is_a_clear_error(raw: Any, expected: str) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"not EXPLAIN (FORMAT JSON) output: expected {expected}")
    ):
        read(raw)


SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
)
NUMBERS = st.integers(min_value=-5, max_value=10**6) | st.floats(-5, 1e6, allow_nan=False)
# Nodes with the keys the reader looks at, each a likely value or anything, so that most are
# read and the findings and the tree meet odd figures.
OPTIONAL_KEYS = {
    "Actual Rows": NUMBERS, "Actual Loops": st.integers(-1, 5), "Rows Removed by Filter": NUMBERS,
    "Relation Name": st.sampled_from(["items", ""]), "Index Name": st.just("items_pkey"),
    "Filter": st.just("(k = 5)"), "Operation": st.just("Update"),
    "Hash Batches": st.integers(-1, 8), "Sort Space Type": st.sampled_from(["Disk", "Memory"]),
    "Sort Method": st.just("external merge"), "Sort Space Used": st.integers(0, 99),
    "HashAgg Batches": st.integers(-1, 8), "Disk Usage": st.integers(0, 99),
    "Shared Hit Blocks": st.integers(0, 99), "Shared Read Blocks": st.integers(0, 99),
}  # fmt: skip
NODES = st.recursive(
    st.fixed_dictionaries(
        {
            "Node Type": st.sampled_from(["Seq Scan", "Nested Loop", "Sort", "ModifyTable"]),
            "Plan Rows": NUMBERS,
            "Startup Cost": NUMBERS,
            "Total Cost": NUMBERS,
        },
        optional={key: value | SCALARS for key, value in OPTIONAL_KEYS.items()},
    ),
    lambda children: st.builds(
        lambda node, plans: {**node, "Plans": plans},
        children,
        st.lists(children, max_size=3),
    ),
    max_leaves=8,
)


@given(NODES, st.dictionaries(st.sampled_from(["items", "tags"]), NUMBERS))
def test_any_node_is_read_or_refused_with_a_value_error(node: Any, sizes: dict[str, float]) -> None:
    try:
        plan = read([{"Plan": node, "Execution Time": 1.5}], sizes)
    except ValueError as exc:
        refused = str(exc)
    else:
        assert plan.render().splitlines()[0].startswith(plan.root.label())
        assert plan.summary().startswith(plan.root.node_type)
        assert all(finding.node in set(plan.nodes()) for finding in plan.findings)
        return
    assert refused.startswith("not EXPLAIN (FORMAT JSON) output: expected ")
