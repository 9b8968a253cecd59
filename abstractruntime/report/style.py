"""The page's stylesheet (inline: the page loads nothing)."""

STYLE = r"""
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#fff;--soft:#f6f7f9;--ok:#2e7d32;--okbg:#e8f5e9;
--bad:#c62828;--badbg:#fdecea;--warn:#b26a00;--warnbg:#fff8e1;--accent:#3559c7}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
background:var(--bg)}
header{padding:18px 28px 10px;border-bottom:1px solid var(--line);background:var(--soft)}
main{padding:0 28px 40px;max-width:1400px}
h1{margin:2px 0 10px;font-size:22px;overflow-wrap:anywhere}
h1 .run{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:17px;color:var(--muted)}
h2{font-size:17px;margin:26px 0 10px}
h4{margin:8px 0 4px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.kicker{margin:0;color:var(--muted);font-size:12px}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-size:13px;vertical-align:middle;
background:#e0e0e0}
.badge.status-completed{background:var(--okbg);color:var(--ok)}
.badge.status-failed,.badge.status-cancelled{background:var(--badbg);color:var(--bad)}
.badge.status-waiting,.badge.status-running{background:var(--warnbg);color:var(--warn)}
dl.fields{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}
dl.fields dt{color:var(--muted)}
dl.fields dd{margin:0;overflow-wrap:anywhere;unicode-bidi:plaintext}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
code{overflow-wrap:anywhere}
pre{margin:4px 0;padding:8px 10px;background:var(--soft);border:1px solid var(--line);border-radius:6px;
white-space:pre-wrap;overflow-wrap:anywhere;max-height:480px;overflow:auto;unicode-bidi:plaintext}
.muted{color:var(--muted)}
.warnings{background:var(--warnbg);border:1px solid #f3d27a;border-radius:6px;padding:8px 8px 8px 28px}
.verdict{margin-top:18px;padding:12px 16px;border-radius:8px;border:2px solid}
.verdict.ok{border-color:var(--ok);background:var(--okbg)}
.verdict.failed{border-color:var(--bad);background:var(--badbg)}
.verdict .headline{margin:0 0 8px}
.verdict.ok .headline{color:var(--ok)}.verdict.failed .headline{color:var(--bad)}
table{border-collapse:collapse}
.checks th{text-align:left;padding:2px 14px 2px 0;font-weight:600}
.checks td{padding:2px 14px 2px 0}
.checks .state{font-weight:600;text-transform:uppercase;font-size:12px}
.check-ok .state{color:var(--ok)}.check-failed .state{color:var(--bad)}
.check-none .state,.check-unchecked .state{color:var(--muted)}
.problems li{margin:2px 0;overflow-wrap:anywhere}
.verdict p{margin:6px 0 0}
.overview{display:grid;grid-template-columns:minmax(0,max-content) minmax(320px,1fr);gap:0 32px;align-items:start}
@media (max-width:900px){.overview{grid-template-columns:1fr}}
.side{min-width:0}
.graph-wrap{overflow:auto;border:1px solid var(--line);border-radius:8px;padding:10px;background:#fff;
max-height:720px}
svg.graph{max-width:100%;height:auto}
svg.fallback .node rect{fill:#fff;stroke:#9e9e9e;stroke-dasharray:4 3}
svg.fallback .node.visited rect{fill:#d7f5dd;stroke:var(--ok);stroke-width:2;stroke-dasharray:none}
svg.fallback .node.current rect{stroke-width:3}
body.status-waiting svg.fallback .node.current rect{fill:#fff3c4}
body.status-failed svg.fallback .node.current rect{fill:#ffd6d6}
svg.fallback text{font:12px Helvetica,Arial,sans-serif;fill:var(--fg)}
svg.fallback .node.notvisited text{fill:#757575}
svg.fallback .edge path{stroke:#9e9e9e;stroke-width:1.3;stroke-dasharray:5 4}
svg.fallback .edge.taken path{stroke:var(--ok);stroke-width:2.4;stroke-dasharray:none}
svg.fallback .edge text{font-size:10px;fill:var(--ok)}
.path{overflow-wrap:anywhere;unicode-bidi:plaintext}
.legend{color:var(--muted);font-size:12px}
.lg{display:inline-block;width:22px;height:0;border-top:3px solid var(--ok);vertical-align:middle;margin:0 4px 0 10px}
.lg.nottaken{border-top:2px dashed #9e9e9e}
.stats{display:flex;flex-wrap:wrap;gap:10px}
.stat{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:6px 12px}
.stat .n{font-weight:700;font-size:16px}
table.marks td,table.marks th{border-bottom:1px solid var(--line);padding:4px 12px 4px 0;text-align:left;
overflow-wrap:anywhere}
table.marks td:nth-child(-n+3),table.marks th:nth-child(-n+3){white-space:nowrap;overflow-wrap:normal}
.controls{display:flex;flex-wrap:wrap;gap:14px;align-items:center;margin-bottom:8px}
.controls input{width:220px}
.pager button{min-width:34px}
.thead,details.row>summary{display:grid;grid-template-columns:4.5em 7.5em minmax(6em,11em) minmax(8em,14em) 1fr 14em;
gap:10px;align-items:center}
.thead{font-size:12px;color:var(--muted);padding:4px 8px;border-bottom:2px solid var(--line)}
details.row{border-bottom:1px solid var(--line)}
details.row>summary{padding:4px 8px;cursor:pointer;list-style:none}
details.row>summary::-webkit-details-marker{display:none}
details.row>summary:hover{background:var(--soft)}
details.row[open]>summary{background:#eef2ff}
details.row>summary>span{min-width:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
unicode-bidi:isolate}
details.row .seq{font-variant-numeric:tabular-nums;color:var(--muted)}
details.row .time{font-variant-numeric:tabular-nums;color:var(--muted);font-size:12px}
details.row .node{font-weight:600}
details.row .what{font-size:12px;color:var(--muted)}
details.row.st-failed,details.row.kind-fail,details.row.kind-unreadable{background:var(--badbg)}
details.row.bad{background:var(--badbg);box-shadow:inset 4px 0 0 var(--bad)}
details.row.st-waiting{background:var(--warnbg)}
details.row[data-etype=llm_call] .what{color:var(--accent)}
.mark{display:inline-block;font-size:11px;border-radius:8px;padding:0 7px;margin-right:6px;background:#e3e8ff;
color:var(--accent)}
.mark.snapshot{background:#f0e6ff;color:#6a1b9a}
.mark.problem{background:var(--bad);color:#fff}
.dur{display:flex;align-items:center;gap:6px}
.bar{display:inline-block;height:9px;border-radius:3px;background:var(--accent);flex:0 0 auto;max-width:45%}
.bar.waitbar{background:repeating-linear-gradient(45deg,#f0b429,#f0b429 4px,#fde7a7 4px,#fde7a7 8px)}
.dur .lbl{font-size:11px;color:var(--muted);white-space:nowrap;font-variant-numeric:tabular-nums}
.detail{padding:6px 12px 12px 4.8em;background:#fbfcff}
.block{margin:6px 0}
.msg{border-left:3px solid var(--line);padding:2px 0 2px 10px;margin:6px 0}
.msg .who{font-size:12px;font-weight:600;color:var(--muted)}
.msg.role-user{border-color:var(--accent)}.msg.role-assistant{border-color:var(--ok)}
.msg.role-system{border-color:#9e9e9e}.msg.role-tool{border-color:#f0b429}
.call{margin:4px 0}.call-name{font-weight:600;font-family:ui-monospace,Menlo,Consolas,monospace}
.call.bad .call-name{color:var(--bad)}
.prompt{font-size:15px;margin:4px 0;unicode-bidi:plaintext;overflow-wrap:anywhere}
.choices{margin:2px 0}
.detail dl{display:grid;grid-template-columns:max-content 1fr;gap:1px 12px;font-size:12px}
.detail dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.block.error h4{color:var(--bad)}
table.index{width:100%}
table.index td,table.index th{border-bottom:1px solid var(--line);padding:5px 12px 5px 0;text-align:left}
td.v-ok{color:var(--ok);font-weight:600}td.v-failed{color:var(--bad);font-weight:600}
"""

__all__ = ["STYLE"]
