"""The on-call page at `/`: from an alert to the guilty line, its plan and the index to fix.

One module per job: `query` (the page's parameters), `records` (the slow-query log's records
in a window, per fingerprint), `plan_view` (plans as readable trees, cached), `chart` (the
latency chart as inline SVG), `recent` (pool counters over the last minutes), `health` (the
strip: databases, pools, collectors, migrations), `indexes` (indexes to fix, from the
collectors' snapshot), `top` (pg_stat_statements' top statements); their HTML in `markup`
(escaping, tables, links), `health_html`, `statements_html`, `tables_html`, `style` and
`render` (the page around them); `page`, the answer to a request for any web framework, and
`web`, its aiohttp route. Everything is read from memory; nothing here talks to a database.
"""
