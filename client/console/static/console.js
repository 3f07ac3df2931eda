/* Hotline console page: renders what the console server sends (see client/console/app.py).
   It draws and counts down; it decides nothing. Every value shown (rung, deadline, whether a
   message may be acknowledged, where a vector ends, what a message removes from the map)
   comes from the server's views of the operator API. All text is set with textContent. */
"use strict";

const state = {
  parties: [],
  levels: [],
  offsetMs: 0,            // server clock minus browser clock
  latest: {},             // "party|message_id" -> latest record view on that floor
  cards: {},              // "party|message_id" -> the card that counts down (SENT/RECEIVED)
  rows: [],               // [{t, seq, el}] kept sorted by event time
  layers: {},             // message_id -> L.LayerGroup
  marks: [],              // timeline marks
  start: null,
  follow: true,           // the map follows new features until the user moves it
  selected: null,
  entries: 0,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c) node.append(c);
  return node;
}
const slug = (s) => String(s).replace(/[^A-Za-z0-9]+/g, "-");
const now = () => Date.now() + state.offsetMs;
const clock = (iso) => (iso ? iso.slice(11, 23) : "");

function seconds(ms) {
  const s = Math.abs(ms) / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + String(Math.floor(s % 60)).padStart(2, "0") + " s";
  return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
}

/* ------------------------------------------------------------------ header: link status */

function renderLinks(links) {
  const box = document.getElementById("links");
  box.replaceChildren();
  for (const party of state.parties) {
    const link = links[party];
    const gw = el("div", { class: "gw", "data-party": party }, el("b", { text: party + " gateway" }));
    if (!link || !link.reachable) {
      gw.append(el("span", { class: "dir", "data-up": "false", text: "unreachable: " + ((link && link.error) || "?") }));
    } else {
      for (const [name, arrow] of [["outbound", party + "→" + link.peer], ["inbound", link.peer + "→" + party]]) {
        const d = link[name];
        let text = arrow + " " + (d.up ? "UP" : "DOWN");
        if (d.up && d.rtt_ms !== null) text += " rtt " + d.rtt_ms.toFixed(1) + " ms";
        if (d.up && d.clock_offset_ms !== null) text += " offset " + (d.clock_offset_ms >= 0 ? "+" : "") + d.clock_offset_ms.toFixed(1) + " ms";
        if (d.queue_depth) text += " queue " + d.queue_depth;
        gw.append(el("span", { class: "dir", "data-direction": name, "data-up": String(d.up), title: d.detail || "", text }));
      }
      gw.append(el("span", { class: "overdue", "data-count": link.overdue_count, text: "overdue " + link.overdue_count }));
    }
    box.append(gw);
  }
}

/* ------------------------------------------------------------------ the floors */

function setupFloors() {
  document.documentElement.style.setProperty("--floors", state.parties.length);
  const head = document.getElementById("floor-head");
  head.replaceChildren(el("div", { class: "t", text: "UTC" }));
  for (const p of state.parties) head.append(el("div", { class: "party-" + slug(p), text: p + " watch floor" }));
}

function ladder(stateName) {
  const rungs = ["JOURNALED", "DELIVERED", "ACKNOWLEDGED"];
  const reached = rungs.indexOf(stateName);
  const box = el("span", { class: "ladder", "data-state": stateName, title: "ladder: " + stateName });
  rungs.forEach((r, i) => box.append(el("i", { class: i <= reached ? "on" : "", text: r[0] })));
  return box;
}

function card(entry) {
  const m = entry.message;
  const kind = entry.kind;
  const attrs = {
    class: "card kind-" + slug(kind),
    "data-seq": entry.seq,
    "data-party": entry.party,
    "data-kind": kind,
    "data-cursor": entry.cursor,
    "data-message-id": entry.message_id,
  };
  if (!m) {
    attrs.class += " link-card";
    const text = (entry.link ? entry.link + ": " : "") + (entry.detail || "");
    return el("div", attrs, el("div", { class: "head" }, el("span", { class: "badge kind", text: kind })), el("div", { class: "summary", text }));
  }
  Object.assign(attrs, { "data-precedence": m.precedence, "data-status": m.status, "data-type": m.type, "data-state": m.state });
  const node = el("div", attrs);
  const head = el("div", { class: "head" },
    el("span", { class: "badge kind", text: kind }),
    el("span", { class: "badge prec-" + m.precedence, text: m.precedence }),
    el("span", { class: "badge status-" + m.status, text: m.status }),
    el("span", { class: "type", text: m.type }),
    el("span", { class: "mid", text: m.short_id }),
    m.action !== "NEW" ? el("span", { class: "badge kind", text: m.action }) : null,
  );
  const right = el("span", { class: "right" });
  if ((kind === "SENT" || kind === "RECEIVED") && m.deadline && m.answers === null) {
    right.append(el("span", { class: "countdown", "data-deadline": m.deadline }));
  }
  right.append(ladder(m.state));
  head.append(right);
  node.append(head);
  node.append(el("div", { class: "summary", text: m.summary, title: m.summary }));
  if (entry.note) node.append(el("div", { class: "note-text", text: entry.note }));
  if (m.can_acknowledge && (kind === "RECEIVED" || kind === "REALERT")) {
    node.append(el("div", { class: "foot" }, el("button", { class: "ackbtn", type: "button", text: "Acknowledge…",
      onclick: (ev) => { ev.stopPropagation(); showDetail(m.message_id, true); } })));
  }
  node.addEventListener("click", () => showDetail(m.message_id, false));
  return node;
}

const MAX_ROWS = 2000; // rows kept on the page (the journals keep everything)
const MAX_MARKS = 5000;

function place(entry, node) {
  const t = Date.parse(entry.time);
  const rows = document.getElementById("rows");
  const item = { t, seq: entry.seq, el: node };
  // Lined up by time: insert after every row not later than this one.
  let i = state.rows.length;
  while (i > 0 && state.rows[i - 1].t > t) i--;
  state.rows.splice(i, 0, item);
  const next = state.rows[i + 1];
  rows.insertBefore(node, next ? next.el : null);
  while (state.rows.length > MAX_ROWS) state.rows.shift().el.remove();
  const nearBottom = rows.scrollHeight - rows.scrollTop - rows.clientHeight < 160;
  if (nearBottom) rows.scrollTop = rows.scrollHeight;
}

function addEntry(entry) {
  state.entries++;
  document.body.dataset.entries = state.entries;
  document.body.dataset.lastSeq = entry.seq;
  if (state.start === null) state.start = Date.parse(entry.time);
  if (entry.kind === "NOTE") {
    place(entry, el("div", { class: "row note", "data-seq": entry.seq, "data-kind": "NOTE", text: entry.detail }));
  } else {
    const row = el("div", { class: "row" }, el("div", { class: "t", text: clock(entry.time) }));
    for (const p of state.parties) row.append(el("div", { class: "cell" }, p === entry.party ? card(entry) : null));
    place(entry, row);
    if (entry.message) state.latest[entry.party + "|" + entry.message.message_id] = entry.message;
  }
  if (entry.map) applyMap(entry.map);
  if (entry.message_id && entry.message_id === state.selected) refreshJournals(entry.message_id);
  state.marks.push(entry);
  if (state.marks.length > MAX_MARKS) state.marks.splice(0, state.marks.length - MAX_MARKS);
}

function tickCountdowns() {
  const t = now();
  for (const node of document.querySelectorAll(".countdown")) {
    const c = node.closest(".card");
    const latest = state.latest[c.dataset.party + "|" + c.dataset.messageId];
    if (latest && latest.ack) {
      node.className = "countdown done";
      node.textContent = latest.ack.level + " by " + latest.ack.responder.split("/").pop();
      node.removeAttribute("data-deadline");
      continue;
    }
    if (latest && !latest.awaiting_ack) { node.textContent = ""; continue; }
    const left = Date.parse(node.dataset.deadline) - t;
    node.classList.toggle("late", left < 0);
    node.textContent = left >= 0 ? "ack due in " + seconds(left) : "OVERDUE " + seconds(left);
  }
}

/* ------------------------------------------------------------------ the map */

let map = null;
const COLOURS = { JP: "#c8102e", TW: "#1d4ed8" };
const ROLE_STYLE = {
  cpa: { color: "#d97706", dashArray: "4 4", fillOpacity: 0.08, weight: 2 },
  "keep-clear": { color: "#0e7490", dashArray: "6 4", fillOpacity: 0.05, weight: 2 },
  hazard: { color: "#b91c1c", fillOpacity: 0.15, weight: 1.5 },
  impact: { color: "#7f1d1d", fillColor: "#dc2626", fillOpacity: 0.3, weight: 2 },
  search: { color: "#15803d", dashArray: "5 4", fillOpacity: 0.08, weight: 2 },
  affected: { color: "#92400e", fillOpacity: 0.12, weight: 1.5 },
  evacuation: { color: "#6d28d9", fillOpacity: 0.08, weight: 1.5 },
  trajectory: { color: "#7f1d1d", dashArray: "8 6", weight: 2 },
};

function setupMap() {
  map = L.map("map", { zoomSnap: 0.25, preferCanvas: false, attributionControl: true });
  map.attributionControl.setPrefix("Leaflet");
  map.fitBounds([[21.8, 119.6], [26.6, 127.9]]);
  map.on("dragstart", () => { state.follow = false; });
  map.on("zoomstart", () => { if (!state.programmatic) state.follow = false; });
  fetch("/static/data/coastline.geojson").then((r) => r.json()).then((data) => {
    L.geoJSON(data, { interactive: false, style: { color: "#8a7f6a", weight: 0.8, fillColor: "#efe9dc", fillOpacity: 1 } }).addTo(map).bringToBack();
    map.attributionControl.addAttribution("Natural Earth (coastline)");
  });
  fetch("/static/data/adiz.geojson").then((r) => r.json()).then((data) => {
    L.geoJSON(data, {
      interactive: false,
      style: (f) => ({ color: f.properties.party === "JP" ? "#9d174d" : "#6d28d9", weight: 1.5, dashArray: "2 5" }),
      onEachFeature: (f, layer) => {
        layer.on("add", () => { const e = layer.getElement(); if (e) e.setAttribute("data-adiz", f.properties.party); });
      },
    }).addTo(map);
    for (const [lat, lon, text] of [[24.74, 123.01, "JADIZ →"], [24.74, 122.99, "← TWADIZ"]]) {
      L.tooltip({ permanent: true, direction: text.startsWith("←") ? "left" : "right", className: "adiz-label" })
        .setLatLng([lat, lon]).setContent(text).addTo(map);
    }
  });
  const legend = L.control({ position: "bottomleft" });
  legend.onAdd = () => el("div", { class: "map-legend" },
    el("div", {}, el("b", { style: "color:#c8102e", text: "▲ JP " }), el("b", { style: "color:#1d4ed8", text: "▲ TW " }), el("b", { style: "color:#374151", text: "▲ other/unknown" })),
    el("div", { text: "vectors: 10 min at sea, 2 min in the air" }),
    el("div", { class: "warn" }, "ADIZ lines: ILLUSTRATIVE (",
      el("a", { href: "/static/data/SOURCES.md", target: "_blank", text: "sources" }), ")"));
  legend.addTo(map);
}

function platformIcon(f) {
  const colour = COLOURS[f.flag] || "#374151";
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("width", "18"); svg.setAttribute("height", "18"); svg.setAttribute("viewBox", "-9 -9 18 18");
  const shape = document.createElementNS(svgNS, "path");
  shape.setAttribute("d", f.domain === "air" ? "M0,-8 L3,6 L0,3 L-3,6 Z" : "M0,-8 L5,7 L-5,7 Z");
  shape.setAttribute("fill", f.role === "intended" ? "none" : colour);
  shape.setAttribute("stroke", f.role === "intended" ? colour : "#fff");
  shape.setAttribute("stroke-width", "1.2");
  shape.setAttribute("transform", "rotate(" + (f.course || 0) + ")");
  svg.append(shape);
  const box = el("div", { "data-feature": f.role, "data-domain": f.domain, "data-message-id": f.message_id, "data-feature-id": f.id, title: f.label });
  box.append(svg);
  return L.divIcon({ html: box, className: "platform-icon", iconSize: [18, 18], iconAnchor: [9, 9] });
}

function mark(layer, f) {
  layer.on("add", () => {
    const e = layer.getElement && layer.getElement();
    if (e) { e.setAttribute("data-feature", f.role); e.setAttribute("data-message-id", f.message_id); e.setAttribute("data-feature-id", f.id); }
  });
  return layer;
}

function featureLayers(f) {
  const out = [];
  const style = ROLE_STYLE[f.role] || { color: COLOURS[f.sender] || "#374151", weight: 1.5, fillOpacity: 0.1 };
  if (f.kind === "platform") {
    const colour = COLOURS[f.flag] || "#374151";
    if (f.vector) out.push(mark(L.polyline(f.vector, { color: colour, weight: 2, dashArray: f.role === "intended" ? "4 4" : null }), { ...f, role: f.role + "-vector" }));
    if (f.role !== "intended") {
      const m = L.marker(f.at, { icon: platformIcon(f), keyboard: false });
      m.bindTooltip(f.label, { permanent: true, direction: "right", offset: [8, 0], className: "map-label" });
      out.push(m);
    }
  } else if (f.kind === "circle") {
    const c = mark(L.circle(f.at, { radius: f.radius_m, ...style }), f);
    c.bindTooltip(f.label, { className: "map-label" });
    out.push(c);
    if (f.role === "cpa") out.push(mark(L.circleMarker(f.at, { radius: 3, color: style.color, fillOpacity: 1 }), { ...f, role: "cpa-point" }));
  } else if (f.kind === "polygon") {
    out.push(mark(L.polygon(f.points, style), f).bindTooltip(f.label, { className: "map-label" }));
  } else if (f.kind === "line") {
    out.push(mark(L.polyline(f.points, style), f));
  } else if (f.kind === "point") {
    const colour = f.role === "launch" ? "#7f1d1d" : f.role === "datum" ? "#15803d" : "#374151";
    const p = mark(L.circleMarker(f.at, { radius: 5, color: "#fff", weight: 1.5, fillColor: colour, fillOpacity: 1 }), f);
    p.bindTooltip(f.label, { permanent: true, direction: "right", offset: [6, 0], className: "map-label" });
    out.push(p);
  }
  return out;
}

function applyMap(change) {
  for (const id of change.remove || []) {
    if (state.layers[id]) { state.layers[id].remove(); delete state.layers[id]; }
  }
  for (const [id, features] of Object.entries(change.show || {})) {
    if (state.layers[id]) state.layers[id].remove();
    const group = L.featureGroup(features.flatMap(featureLayers)).addTo(map);
    state.layers[id] = group;
  }
  document.body.dataset.mapMessages = Object.keys(state.layers).length;
  if (state.follow) fitToFeatures();
}

function fitToFeatures() {
  const groups = Object.values(state.layers);
  if (!groups.length) return;
  let bounds = null;
  for (const g of groups) { const b = g.getBounds(); if (b.isValid()) bounds = bounds ? bounds.extend(b) : L.latLngBounds(b.getSouthWest(), b.getNorthEast()); }
  if (!bounds) return;
  state.programmatic = true;
  map.fitBounds(bounds.pad(0.35), { maxZoom: 10, animate: false });
  state.programmatic = false;
}

/* ------------------------------------------------------------------ a message's record */

const FIELDS = [
  ["state", "state"], ["direction", "direction"], ["journal_position", "journal position"],
  ["sequence", "link sequence"], ["journal_time", "journaled"], ["deliver_time", "delivered"],
  ["acknowledge_time", "acknowledged"], ["deadline", "ack deadline"], ["overdue", "overdue"],
  ["originator", "originator"], ["create_time", "created"], ["classification", "classification"],
  ["releasable_to", "releasable to"], ["language", "language"], ["action", "action"],
  ["references", "references"], ["signed_by_key", "signed by key"],
];

async function fetchRecord(messageId) {
  const response = await fetch("/api/messages/" + encodeURIComponent(messageId));
  return response.json();
}

async function showDetail(messageId, focusAck) {
  const box = document.getElementById("detail");
  document.querySelectorAll(".card.selected").forEach((c) => c.classList.remove("selected"));
  document.querySelectorAll('.card[data-message-id="' + CSS.escape(messageId) + '"]').forEach((c) => c.classList.add("selected"));
  state.selected = messageId;
  const data = await fetchRecord(messageId);
  if (state.selected !== messageId) return;
  const any = Object.values(data.journals).find((j) => j.record);
  const head = el("h3", {}, el("span", { text: "Message " + messageId }),
    el("button", { class: "close", type: "button", text: "×", onclick: () => { box.hidden = true; state.selected = null; } }));
  const [cols, ackParty] = journalColumns(data);
  box.replaceChildren(head);
  if (any) box.append(el("div", { class: "summary", text: any.record.type + ": " + any.record.summary }));
  if (ackParty) box.append(ackForm(ackParty, messageId, focusAck));
  box.append(cols);
  box.hidden = false;
}

async function refreshJournals(messageId) {
  const data = await fetchRecord(messageId);
  const old = document.querySelector("#detail .journals");
  if (state.selected !== messageId || !old) return;
  old.replaceWith(journalColumns(data)[0]);
}

function journalColumns(data) {
  const cols = el("div", { class: "journals" });
  let ackParty = null;
  for (const party of state.parties) {
    const j = data.journals[party] || {};
    const col = el("div", { class: "journal", "data-party": party }, el("h4", { text: party + " journal" }));
    if (!j.record) { col.append(el("div", { class: "mid", text: j.error || "not in this journal" })); cols.append(col); continue; }
    const r = j.record;
    if (r.can_acknowledge) ackParty = party;
    const table = el("table");
    for (const [key, label] of FIELDS) {
      let v = r[key];
      if (v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length)) continue;
      if (Array.isArray(v)) v = v.join(", ");
      table.append(el("tr", {}, el("td", { text: label }), el("td", { text: String(v) })));
    }
    if (r.ack) table.append(el("tr", {}, el("td", { text: "answer" }), el("td", { text: r.ack.level + " by " + r.ack.responder + (r.ack.reason ? ": " + r.ack.reason : r.ack.remarks ? ": " + r.ack.remarks : "") })));
    if (r.rejection) table.append(el("tr", {}, el("td", { text: "rejected" }), el("td", { text: r.rejection.reason + ": " + r.rejection.detail })));
    col.append(table);
    col.append(el("details", {}, el("summary", { text: "body" }), el("pre", { text: JSON.stringify(r.body, null, 1) })));
    cols.append(col);
  }
  return [cols, ackParty];
}

function ackForm(party, messageId, focus) {
  const form = el("form", { class: "ack", "data-party": party, "data-message-id": messageId });
  form.append(el("b", { text: "Acknowledge as " + party + ":" }));
  state.levels.forEach((level, i) => {
    const id = "lvl-" + level;
    form.append(el("label", { for: id }, el("input", { type: "radio", name: "level", id, value: level, checked: i === 0 }), " " + level));
  });
  const text = el("input", { type: "text", name: "text", maxlength: 1024, placeholder: "remarks (the reason, for UNABLE)" });
  form.append(text, el("button", { type: "submit", text: "Send" }));
  const result = el("span", { class: "ack-result" });
  form.append(result);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const level = form.querySelector("input[name=level]:checked").value;
    result.className = "ack-result"; result.textContent = "sending…";
    const response = await fetch("/api/acknowledge", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ party, message_id: messageId, level, text: text.value }),
    });
    const data = await response.json();
    if (response.ok) {
      result.textContent = level + " journaled by " + party + " (position " + data.journal_position + ")";
      result.dataset.ok = "true";
      refreshJournals(messageId);
    }
    else { result.className = "ack-result error"; result.textContent = data.error || response.statusText; result.dataset.ok = "false"; }
  });
  if (focus) setTimeout(() => text.focus(), 0);
  return form;
}

/* ------------------------------------------------------------------ the timeline */

const MARK_COLOUR = { SENT: "#2563eb", RECEIVED: "#2563eb", DELIVERED: "#15803d", ACKNOWLEDGED: "#15803d",
  ESCALATION: "#c8102e", REALERT: "#b45309", REJECTED: "#c8102e", "LINK DOWN": "#c8102e", "LINK UP": "#15803d", NOTE: "#0f3d57" };

function drawTimeline() {
  const svg = document.getElementById("timeline");
  const width = svg.clientWidth || 800, height = svg.clientHeight || 60;
  const left = 60, right = 10;
  const svgNS = "http://www.w3.org/2000/svg";
  const make = (tag, attrs) => { const n = document.createElementNS(svgNS, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); return n; };
  svg.replaceChildren();
  if (state.start === null) return;
  const end = Math.max(now(), state.start + 10000);
  const x = (t) => left + ((t - state.start) / (end - state.start)) * (width - left - right);
  const lanes = state.parties.length;
  const laneH = (height - 16) / Math.max(lanes, 1);
  state.parties.forEach((p, i) => {
    const y = 4 + i * laneH;
    svg.append(make("line", { x1: left, x2: width - right, y1: y + laneH / 2, y2: y + laneH / 2, stroke: "#e5e7eb" }));
    const label = make("text", { x: 6, y: y + laneH / 2 + 3, fill: COLOURS[p] || "#374151", "font-weight": 700 });
    label.textContent = p;
    svg.append(label);
  });
  // Link-down periods, per floor and direction, shaded.
  const down = {};
  for (const e of state.marks) {
    if (e.kind !== "LINK DOWN" && e.kind !== "LINK UP") continue;
    const key = e.party + "|" + e.link;
    if (e.kind === "LINK DOWN") down[key] = Date.parse(e.time);
    else if (down[key] !== undefined) { shade(e.party, down[key], Date.parse(e.time)); delete down[key]; }
  }
  for (const [key, t] of Object.entries(down)) shade(key.split("|")[0], t, end);
  function shade(party, t0, t1) {
    const i = state.parties.indexOf(party);
    if (i < 0) return;
    svg.append(make("rect", { x: x(t0), y: 4 + i * laneH, width: Math.max(x(t1) - x(t0), 1), height: laneH, fill: "rgba(200,16,46,.15)", "data-link-down": party }));
  }
  for (const e of state.marks) {
    const t = Date.parse(e.time);
    const colour = MARK_COLOUR[e.kind] || "#6b7280";
    if (e.kind === "NOTE") { svg.append(make("line", { x1: x(t), x2: x(t), y1: 2, y2: height - 14, stroke: colour, "stroke-dasharray": "2 3" })); continue; }
    const i = state.parties.indexOf(e.party);
    if (i < 0) continue;
    const big = e.kind === "ESCALATION" || e.kind === "REALERT";
    const y = 4 + i * laneH + laneH / 2;
    svg.append(make("circle", { cx: x(t), cy: y, r: big ? 5 : 2.5, fill: colour, "data-kind": e.kind }));
  }
  const total = (end - state.start) / 1000;
  for (let k = 0; k <= 4; k++) {
    const t = state.start + ((end - state.start) * k) / 4;
    const label = make("text", { x: x(t) - (k === 4 ? 30 : 0), y: height - 3, fill: "#6b7280" });
    label.textContent = "t+" + ((total * k) / 4).toFixed(0) + " s";
    svg.append(label);
  }
}

/* ------------------------------------------------------------------ the stream */

function reset() {
  document.getElementById("rows").replaceChildren();
  for (const g of Object.values(state.layers)) g.remove();
  Object.assign(state, { latest: {}, cards: {}, rows: [], layers: {}, marks: [], start: null, entries: 0 });
}

function connect() {
  const stream = document.getElementById("stream");
  const source = new EventSource("/api/events");
  source.onopen = () => { stream.dataset.state = "live"; stream.textContent = "live"; };
  source.onerror = () => { stream.dataset.state = "reconnecting"; stream.textContent = "reconnecting…"; };
  source.addEventListener("reset", reset);
  source.addEventListener("links", (ev) => {
    const data = JSON.parse(ev.data);
    state.offsetMs = Date.parse(data.server_time) - Date.now();
    renderLinks(data.links);
  });
  source.addEventListener("entry", (ev) => addEntry(JSON.parse(ev.data)));
}

async function main() {
  const config = await (await fetch("/api/config")).json();
  state.parties = config.parties;
  state.levels = config.levels;
  state.offsetMs = Date.parse(config.server_time) - Date.now();
  document.getElementById("title").textContent = config.title;
  document.title = config.title;
  setupFloors();
  renderLinks(config.links);
  setupMap();
  connect();
  setInterval(tickCountdowns, 100);
  setInterval(drawTimeline, 1000);
}

main();
