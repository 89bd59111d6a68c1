"""The health strip (a card per database) and the collectors' table, as HTML."""

from __future__ import annotations

from collections import Counter
from html import escape

from exporter.oncall.health import DatabaseHealth, Health
from exporter.oncall.markup import (
    COLLECTOR_FAILING,
    DATABASE_DOWN,
    MIGRATIONS_PENDING,
    POOL_SATURATED,
    POOL_TIMEOUTS,
    SCHEMA_DRIFT,
    Links,
    duration,
    row,
    shown,
    table,
)

COLLECTOR_STATES = (
    ("ok", "ok"), ("waiting", "waiting for a first run"), ("elsewhere", "run by another exporter"),
    ("failing", "failing"), ("down", "not running: the database is down"),
)  # fmt: skip


def _signal(state: str, what: str, detail: str, links: str) -> str:
    return (
        f'<li class="{state}"><span class="what">{what}</span> {detail}'
        f' <span class="links">{links}</span></li>'
    )


def _database_card(db: DatabaseHealth, position: int, span: str, links: Links) -> str:
    name = escape(db.name)
    signals = []
    if db.reason is None:
        signals.append(_signal("muted", "database", "not checked by this exporter", ""))
    elif db.up is None:
        signals.append(_signal("muted", "database", "not checked yet", ""))
    else:
        state = "ok" if db.up else "bad"
        detail = "up" if db.up else f"<b>down</b>: {shown(db.reason)}"
        signals.append(_signal(state, "database", detail, links.both(DATABASE_DOWN, db.name)))
    pool = db.pool
    if pool is None:
        signals.append(_signal("muted", "pool", "no instrumented pool in this process", ""))
    else:
        limit = "unlimited" if pool.max_overflow < 0 else f"{pool.max_overflow:.0f}"
        full = pool.in_use >= pool.size + max(pool.max_overflow, 0) and pool.max_overflow >= 0
        detail = (
            f"{pool.in_use:.0f} of {pool.size:.0f} in use, overflow {pool.overflow:.0f} of {limit}"
        )
        state = "bad" if full else ("warn" if pool.overflow > 0 else "ok")
        signals.append(_signal(state, "pool", detail, links.both(POOL_SATURATED, db.name)))
    if db.recent is not None:
        recent = db.recent
        state = "bad" if recent.timeouts else ("warn" if recent.waits else "ok")
        detail = (
            f"{recent.checkouts:.0f} checkouts {span}: {recent.waits:.0f} waited over 100 ms,"
            f" {recent.timeouts:.0f} timed out"
        )
        signals.append(_signal(state, "checkouts", detail, links.both(POOL_TIMEOUTS, db.name)))
    if db.collectors:
        failing = db.failing
        anchor = f'<a class="tag" href="#collectors-{position}">detail</a> '
        if failing:
            names = ", ".join(escape(c.name) for c in failing)
            detail, state = f"<b>{len(failing)} failing</b>: {names}", "bad"
        elif db.up is False:
            detail, state = "not running while the database is down", "muted"
        else:
            counts = Counter(c.state for c in db.collectors)
            detail = ", ".join(
                f"{counts[key]} {label}" for key, label in COLLECTOR_STATES if counts[key]
            )
            state = "ok"
        signals.append(
            _signal(state, "collectors", detail, anchor + links.both(COLLECTOR_FAILING, db.name))
        )
    if db.migrations is not None:
        pending, drift = db.migrations.pending, db.migrations.drift
        parts = [f"{pending:.0f} pending" if pending is not None else "pending unknown"]
        parts.append(
            "drift not compared"
            if drift is None
            else (f"<b>{drift:.0f} differences</b> from the models" if drift else "no drift")
        )
        state = "bad" if (pending or drift) else "ok"
        signal = SCHEMA_DRIFT if drift and not pending else MIGRATIONS_PENDING
        signals.append(_signal(state, "migrations", ", ".join(parts), links.both(signal, db.name)))
    down = db.up is False or any(s.startswith('<li class="bad"') for s in signals)
    return (
        f'<div class="card{" down" if down else ""}"><h3>{name}</h3>'
        f'<ul class="signals">{"".join(signals)}</ul></div>'
    )


def health_section(health: Health, links: Links) -> str:
    span = (
        f"in the last {duration(health.recent_seconds)}" if health.recent_seconds else "since start"
    )
    cards = "".join(
        _database_card(db, i, span, links) for i, db in enumerate(health.databases)
    ) or (
        '<p class="muted">No database is configured for this exporter and no pool is '
        "instrumented in this process.</p>"
    )
    return f'<section id="health"><h2>Health</h2><div class="strip">{cards}</div></section>'


def collectors_section(health: Health) -> str:
    rows = []
    for i, db in enumerate(health.databases):
        for c in db.collectors:
            state = dict(COLLECTOR_STATES).get(c.state, c.state)
            css = "bad" if c.state == "failing" else ""
            cells = [escape(db.name), escape(c.name), state, shown(c.reason or "")]
            rows.append(row(cells, css).replace("<tr", f'<tr id="collectors-{i}"', 1))
    return (
        '<section id="collectors"><h2>Collectors</h2>'
        + table(
            "collector-states",
            ("Database", "Collector", "State", "Last failure"),
            rows,
            "No collectors run in this exporter.",
        )
        + "</section>"
    )
