"""The page's stylesheet, inline (the page loads nothing from elsewhere). Readable from a
390 px phone to a wide screen: the strip's cards wrap, wide tables scroll sideways in their
own box, long SQL wraps."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1rem; max-width: 1600px;
  color: #1d1d1f; line-height: 1.4; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; } h2 { font-size: 1.2rem; margin: 1.6rem 0 .5rem;
  border-bottom: 2px solid #ddd; } h3 { font-size: 1rem; margin: .2rem 0; }
h4 { margin: .6rem 0 .2rem; font-size: .95rem; }
nav, form { margin: .3rem 0; } form select, form button { font: inherit; }
.muted { color: #666; } .warn { color: #8a5a00; } .suggest { background: #fff8e1;
  border-left: 4px solid #e0a800; padding: .4rem .6rem; }
.strip { display: flex; flex-wrap: wrap; gap: .6rem; }
.card { border: 1px solid #ccc; border-left: 6px solid #2e7d32; border-radius: 4px;
  padding: .4rem .7rem; flex: 1 1 340px; max-width: 100%; box-sizing: border-box; }
.card.down { border-left-color: #c62828; }
.signals { list-style: none; padding: 0; margin: 0; }
.signals li { padding: .15rem 0 .15rem 1.1rem; position: relative; overflow-wrap: anywhere; }
.signals li::before { content: ""; position: absolute; left: 0; top: .55rem; width: .6rem;
  height: .6rem; border-radius: 50%; background: #999; }
.signals li.ok::before { background: #2e7d32; } .signals li.warn::before { background: #e0a800; }
.signals li.bad::before { background: #c62828; } .signals li.bad { color: #b71c1c; }
.what { font-weight: 600; display: inline-block; min-width: 6.5rem; }
.tag { font-size: .8rem; border: 1px solid #99b; border-radius: 3px; padding: 0 .3rem;
  text-decoration: none; white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin-bottom: 1rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } tr.bad td { background: #fdecea; }
td code { white-space: nowrap; } td pre { min-width: 18rem; max-width: 50rem; }
code { font-size: .85rem; overflow-wrap: anywhere; } code.copy { user-select: all;
  background: #f3f3f3; padding: 0 .2rem; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f7f7f7; padding: .5rem;
  margin: .3rem 0; font-size: .85rem; max-height: 30rem; overflow-y: auto; }
details summary { cursor: pointer; color: #1a4fa0; }
.statement { border-top: 1px solid #ddd; padding: .5rem 0; }
.statement dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem;
  margin: .3rem 0; } .statement dt { font-weight: 600; } .statement dd { margin: 0;
  overflow-wrap: anywhere; }
.findings { background: #fdecea; border-left: 4px solid #c62828; padding: .3rem .5rem .3rem 1.6rem;
  margin: .3rem 0; }
.plan, .plan ul { list-style: none; padding-left: 1.1rem; margin: 0; font-size: .85rem; }
.plan { padding-left: 0; } .plan li { border-left: 1px dotted #aaa; padding-left: .4rem;
  margin: .1rem 0; overflow-wrap: anywhere; }
.plan .node { font-weight: 600; } .plan .cost, .plan .actual { color: #555; }
.plan .cond { color: #444; font-family: monospace; }
.plan li.flagged > .node { color: #b71c1c; } .plan .finding { color: #b71c1c; }
.chart rect { fill: #1a73e8; } .chart line { stroke: #999; } .chart text { font-size: 9px;
  fill: #555; }
@media (max-width: 600px) { body { padding: .5rem; } .what { min-width: 0; margin-right: .3rem; }
  .statement dl { grid-template-columns: 1fr; } }
"""
