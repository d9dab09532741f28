// The dashboard page: one WebSocket of JSON documents (at most ten a second), drawn as
// plain tables, SVG sparklines and a canvas PnL chart. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const count = new Intl.NumberFormat("en-US");
const money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const qty = (v) => v.toFixed(4);
const esc = (v) => String(v).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
let received = 0;

// Table rows: `cells(item)` gives [html, className, field] per cell; numbers use class "n",
// and a field name becomes data-field (what the tests read).
function fill(id, items, cells, attrs = () => "") {
  const html = items.map((item) => `<tr ${attrs(item)}>` +
    cells(item).map(([v, cls, field]) =>
      `<td class="${esc(cls || "")}"${field ? ` data-field="${field}"` : ""}>${v}</td>`).join("") +
    "</tr>").join("");
  $(id).innerHTML = html || '<tr><td class="empty">none yet</td></tr>';
}

function sparkline(values, w = 140, h = 22) {
  if (values.length < 2) return "";
  const top = Math.max(...values, 1);
  const pts = values.map((v, i) =>
    `${(i * w / (values.length - 1)).toFixed(1)},${(h - 1 - v / top * (h - 2)).toFixed(1)}`);
  return `<svg width="${w}" height="${h}"><polyline points="${pts.join(" ")}"/></svg>`;
}

function chart(canvas, points) {
  const r = window.devicePixelRatio || 1;
  const w = (canvas.width = canvas.clientWidth * r), h = (canvas.height = canvas.clientHeight * r);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  const ys = points.map((p) => p[1]);
  const lo = Math.min(0, ...ys), hi = Math.max(lo + 1e-9, 0, ...ys);
  const t0 = points[0][0], span = points[points.length - 1][0] - t0 || 1;
  const x = (t) => 1 + (t - t0) / span * (w - 2), y = (v) => h - 4 - (v - lo) / (hi - lo) * (h - 8);
  ctx.strokeStyle = "#3a434f";
  ctx.beginPath(); ctx.moveTo(0, y(0)); ctx.lineTo(w, y(0)); ctx.stroke();
  ctx.strokeStyle = ys[ys.length - 1] >= 0 ? "#4cc38a" : "#f06a6a";
  ctx.lineWidth = 2 * r;
  ctx.beginPath();
  points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
}

function draw(d) {
  const b = d.broker;
  $("broker").textContent = b ? `broker ${b.id} on ${b.socket} · up ${Math.round(b.uptime_s)} s · ` +
    `${b.connections} connections` : "broker: not answering";
  fill("topics", d.topics, (t) => [
    [esc(t.name)], [esc(t.routing)], [t.producers, "n"], [t.consumers, "n"],
    [count.format(t.published), "n", "published"], [count.format(t.delivered), "n", "delivered"],
    [count.format(Math.round(t.publish_rate)), "n", "publish_rate"],
    [count.format(Math.round(t.deliver_rate)), "n"], [count.format(t.dropped), "n", "dropped"],
    [sparkline(t.rates)],
  ], (t) => `data-topic="${esc(t.name)}"`);
  fill("trades", d.trades, (t) => [
    [esc(t.time)], [esc(t.venue)], [esc(t.asset)], [esc(t.side), t.side],
    [money.format(t.price), "n"], [qty(t.qty), "n"],
  ]);
  $("gas").textContent = d.gas_gwei === null ? "" : `gas ${d.gas_gwei} gwei`;
  fill("books", d.books, (p) => [
    [esc(p.asset)], [esc(p.venue)], [p.bid ? money.format(p.bid) : "", "n"],
    [money.format(p.mid), "n"], [p.ask ? money.format(p.ask) : "", "n"],
  ]);
  fill("signals", d.signals, (s) => [
    [s.id, "n"], [esc(s.buy)], [esc(s.sell)], [s.spread_bps, "n"], [money.format(s.net_usd), "n"],
  ]);
  fill("positions", d.positions, (p) => [[esc(p.asset)], [esc(p.venue)], [qty(p.qty), "n"]]);
  $("pnl-usd").textContent = `$${money.format(d.pnl.usd)}`;
  $("pnl-expected").textContent = `$${money.format(d.pnl.expected_usd)}`;
  $("orders").textContent = count.format(d.pnl.orders);
  chart($("pnl-chart"), d.pnl.history);
  $("seen").innerHTML = Object.entries(d.seen).map(([k, v]) =>
    `${esc(k)} <span id="seen-${esc(k)}">${count.format(v)}</span>`).join(", ");
  $("shed").textContent = count.format(d.shed);
  $("update-seq").textContent = count.format(++received);
  $("stats-seq").textContent = count.format(d.stats_seq);
  $("clients").textContent = d.web.clients;
}

function connect(delay) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.onopen = () => { delay = 250; $("link").className = "up"; };
  ws.onmessage = (e) => draw(JSON.parse(e.data));
  ws.onclose = () => {
    $("link").className = "down";
    setTimeout(() => connect(Math.min(delay * 2, 5000)), delay);
  };
}

connect(250);
