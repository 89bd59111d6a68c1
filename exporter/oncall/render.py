"""The page around its sections: the header with the window and refresh form, the inline
stylesheet, the refresh."""

from __future__ import annotations

from html import escape

from exporter.oncall.markup import (
    moment,
)
from exporter.oncall.query import WINDOWS, PageQuery
from exporter.oncall.style import STYLE

REFRESH_CHOICES = (15, 30, 60, 300)


def _form(query: PageQuery) -> str:
    windows = "".join(
        f'<option value="{w}"{" selected" if w == query.window else ""}>{w}</option>'
        for w in WINDOWS
    )
    if query.window not in WINDOWS:
        windows += (
            f'<option value="{escape(query.window)}" selected>{escape(query.window)}</option>'
        )
    refresh = '<option value="">off</option>' + "".join(
        f'<option value="{r}"{" selected" if r == query.refresh else ""}>{r} s</option>'
        for r in REFRESH_CHOICES
    )
    if query.refresh is not None and query.refresh not in REFRESH_CHOICES:
        refresh += f'<option value="{query.refresh}" selected>{query.refresh} s</option>'
    return (
        '<form method="get" action="./"><label>Window <select name="window">'
        f'{windows}</select></label> <label>Refresh <select name="refresh">{refresh}'
        "</select></label> <button>Show</button></form>"
    )


def page(query: PageQuery, sections: list[str], now: float) -> str:
    """Every link to the exporter's own endpoints is relative: the same page works at `/` of
    the sidecar and below the prefix an application mounts the endpoints at."""
    refresh = f'<meta http-equiv="refresh" content="{query.refresh}">' if query.refresh else ""
    nav = " &middot; ".join(
        f'<a href="{href}">{label}</a>'
        for href, label in (
            ("#health", "Health"), ("#slow-statements", "Slow statements"),
            ("#n-plus-one", "N+1"), ("#indexes", "Indexes"),
            ("#top-statements", "Top statements"), ("metrics", "/metrics"),
            ("slow-queries", "/slow-queries"), ("readyz", "/readyz"),
        )
    )  # fmt: skip
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>db-exporter: on call</title><style>{STYLE}</style></head><body>"
        f"<header><h1>db-exporter</h1><nav>{nav}</nav>{_form(query)}"
        f'<p class="muted">As of {moment(now)} UTC.</p></header>'
        + "\n".join(sections)
        + "</body></html>\n"
    )
