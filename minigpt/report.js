// minigpt's lens report: builds the grid from the JSON element just before this script.
// Token text is only ever written with textContent, never parsed as HTML: it stays text, whatever it holds.
(function () {
  "use strict";
  const script = document.currentScript;
  const root = script.parentElement;
  const D = JSON.parse(script.previousElementSibling.textContent);
  const R = D.R, T = D.T, K = D.K;
  const q = (selector) => root.querySelector(selector);
  const at = (r, t) => r * T + t; // flat index of a (row, position) cell; rows bottom first
  const topId = (r, t, j) => D.top_ids[at(r, t) * K + j];
  const topProb = (r, t, j) => D.top_probs[at(r, t) * K + j];
  const TARGETS = ["final", "next", "input"];
  const TARGET_WORDS = { final: "final top-1", next: "next token", input: "input token" };

  const el = mgElement;
  const tok = (id) => mgToken(D, id);
  function tokSpan(id) {
    return el("span", "mg-tok", tok(id));
  }
  function prob(p) { // a probability as a plain number: 0.123, 0.0031, 3.0e-5
    if (p === null || p === undefined) return "–";
    if (p >= 0.01) return p.toFixed(3);
    if (p >= 0.001) return p.toFixed(4);
    return p.toExponential(1);
  }
  function num(v) {
    if (v === null || v === undefined) return "–";
    return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  }

  // ------------------------------------------------------------------
  // Colours: matplotlib's rule for a 256-colour table (index int(x * 256), the top end included)

  function colourIndex(view, v) {
    let x;
    if (view.log) {
      const c = Math.min(Math.max(v, view.lo), view.hi);
      x = (Math.log10(c) - Math.log10(view.lo)) / (Math.log10(view.hi) - Math.log10(view.lo));
    } else {
      x = (v - view.lo) / (view.hi - view.lo);
    }
    x = Math.min(Math.max(x, 0), 1);
    const i = Math.min(Math.floor(x * 256), 255);
    return view.reversed ? 255 - i : i;
  }
  function colour(view, v) {
    if (v === null) return D.bad;
    return view.categories ? view.categories[v].colour : D.colours[colourIndex(view, v)]; // the depth view: 3 colours
  }
  function ink(hex) { // black on light colours, white on dark ones (the PNG's rule)
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
    return 0.299 * r + 0.587 * g + 0.114 * b > 0.5 ? "#000000" : "#ffffff";
  }

  // ------------------------------------------------------------------
  // The grid: next tokens on top, the last row first, input tokens and positions below

  const table = q(".mg-grid");
  table.setAttribute("aria-label", "logit lens: rows are layers (the last on top), columns are positions");
  const cells = []; // cells[r][t]
  const rowsTr = [];
  const colHeads = []; // header and footer cells per position
  for (let t = 0; t < T; t++) colHeads.push([]);

  const thead = el("thead"), tbody = el("tbody"), tfoot = el("tfoot");
  const nextTr = el("tr");
  nextTr.appendChild(el("th", "mg-label", "next"));
  for (let t = 0; t < T; t++) {
    const n = D.next[t];
    const th = el("th", "mg-next", n < 0 ? "" : tok(n) + (D.final[t] === n ? "*" : ""));
    th.scope = "col";
    th.dataset.pos = D.start + t;
    nextTr.appendChild(th);
    colHeads[t].push(th);
  }
  thead.appendChild(nextTr);

  for (let r = 0; r < R; r++) cells.push([]);
  for (let r = R - 1; r >= 0; r--) {
    const tr = el("tr");
    tr.dataset.row = D.rows[r].label;
    const th = el("th", "mg-label", D.rows[r].label);
    th.scope = "row";
    tr.appendChild(th);
    for (let t = 0; t < T; t++) {
      const top1 = topId(r, t, 0);
      const td = el("td", "mg-cell", tok(top1));
      td.setAttribute("role", "gridcell");
      td.tabIndex = -1;
      td.dataset.row = D.rows[r].label;
      td.dataset.pos = D.start + t;
      td.dataset.top1 = top1;
      if (top1 === D.final[t]) td.classList.add("mg-hit");
      td.mgR = r;
      td.mgT = t;
      cells[r][t] = td;
      tr.appendChild(td);
    }
    rowsTr[r] = tr;
    tbody.appendChild(tr);
  }

  const footRow = (label, cls, text) => {
    const tr = el("tr");
    tr.appendChild(el("th", "mg-label", label));
    for (let t = 0; t < T; t++) {
      const th = el("th", cls, text(t));
      th.dataset.pos = D.start + t;
      tr.appendChild(th);
      colHeads[t].push(th);
    }
    tfoot.appendChild(tr);
  };
  footRow("input", "mg-input", (t) => tok(D.input[t]));
  footRow("position", "mg-pos", (t) => D.start + t);
  const attCells = [];
  if (D.attention) {
    const tr = el("tr");
    tr.appendChild(el("th", "mg-label", "reads (%)"));
    for (let t = 0; t < T; t++) {
      const td = el("td", "mg-att", "");
      td.dataset.pos = D.start + t;
      tr.appendChild(td);
      attCells.push(td);
      colHeads[t].push(td);
    }
    tfoot.appendChild(tr);
  }
  table.append(thead, tbody, tfoot);


  // ------------------------------------------------------------------
  // Header, notice, legend

  q(".mg-title").textContent = D.title;
  document.title = D.title;
  const topNote = D.k < 10 ? " (this lens kept only k=" + D.k + "; compute it with k=10 for the top 10)" : "";
  const decoder = D.decoder.title.includes(D.decoder.name) ? D.decoder.title : D.decoder.title + " (" + D.decoder.name + ")";
  q(".mg-decoder").textContent = "decoder: " + decoder + ". " + R + " rows × " + T +
    " positions; hover shows the top " + K + topNote + ".";
  if (D.total > T) {
    const notice = q(".mg-notice");
    notice.textContent = "Showing the last " + T + " of " + D.total + " positions (" + D.start + "–" + (D.start + T - 1) +
      "): a report holds at most max_positions=" + T + " of them. Choose others with result[a:b] or --range.";
    notice.hidden = false;
  }

  // A swatch and its words, kept on one line (the legend wraps between keys, never inside one).
  function key(swatchClass, background, text) {
    const k = el("span", "mg-key"), swatch = el("span", swatchClass);
    if (background) swatch.style.background = background;
    k.append(swatch, el("span", null, text));
    return k;
  }
  function renderLegend(view) {
    const legend = q(".mg-legend");
    legend.textContent = "";
    if (view.categories) { // the depth view: its three colours and its line, as the PNG's legend has them
      legend.append(el("span", null, view.legend));
      for (const c of view.categories) legend.append(key("mg-swatch", c.colour, c.label));
      legend.append(key("mg-swatch mg-line", null, "line: under the depth row, from which every row's top-1 is the final top-1 (none: the top row disagrees)"));
    } else {
      legend.append(colourBar(view), el("span", null, view.legend));
    }
    legend.append(key("mg-swatch", D.bad, "no value"), key("mg-swatch mg-outline", null, "outline: the row's top-1 is the model's final top-1"));
  }
  function colourBar(view) {
    const scale = el("div", "mg-scale");
    const bar = el("div", "mg-bar");
    const stops = [];
    for (let i = 0; i <= 32; i++) stops.push(D.colours[view.reversed ? 255 - Math.min(i * 8, 255) : Math.min(i * 8, 255)]);
    bar.style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
    const ticks = el("div", "mg-ticks");
    const place = (value, text) => {
      const x = view.log ? Math.log10(value / view.lo) / Math.log10(view.hi / view.lo) : (value - view.lo) / (view.hi - view.lo);
      const s = el("span", null, text);
      s.style.left = (100 * x).toFixed(2) + "%";
      ticks.appendChild(s);
    };
    if (view.log) {
      for (let v = view.lo; v <= view.hi * 1.0001; v *= 10) place(v, String(Math.round(v)));
    } else {
      place(view.lo, num(view.lo));
      place((view.lo + view.hi) / 2, num((view.lo + view.hi) / 2));
      place(view.hi, num(view.hi));
    }
    scale.append(bar, ticks);
    return scale;
  }

  // ------------------------------------------------------------------
  // Views

  const viewSelect = q(".mg-view");
  for (const name of Object.keys(D.views)) {
    const option = el("option", null, D.views[name].label);
    option.value = name;
    viewSelect.appendChild(option);
  }
  let current = D.view;
  function applyView(name) {
    current = name;
    const view = D.views[name];
    for (let r = 0; r < R; r++) {
      for (let t = 0; t < T; t++) {
        const v = view.values[at(r, t)];
        const td = cells[r][t];
        const c = colour(view, v);
        td.style.backgroundColor = c;
        td.style.color = ink(c);
        td.dataset.value = v === null ? "" : String(v);
      }
    }
    root.classList.toggle("mg-depth-view", name === "depth");
    viewSelect.value = name;
    renderLegend(view);
  }
  viewSelect.addEventListener("change", () => applyView(viewSelect.value));

  // ------------------------------------------------------------------
  // Which rows and positions are shown: a layer stride (embed and the last block always stay) and a range

  let lastBlock = -1;
  for (const row of D.rows) lastBlock = Math.max(lastBlock, row.block);
  let stride = 1, from = 0, to = T - 1; // from and to: indices into the report's positions
  const rowShown = (r) => D.rows[r].block < 0 || D.rows[r].block % stride === 0 || D.rows[r].block === lastBlock;
  const colShown = (t) => t >= from && t <= to;
  const shownRows = () => { const rs = []; for (let r = 0; r < R; r++) if (rowShown(r)) rs.push(r); return rs; };
  const shownCols = () => { const ts = []; for (let t = from; t <= to; t++) ts.push(t); return ts; };

  function applyShown() {
    for (let r = 0; r < R; r++) {
      rowsTr[r].hidden = !rowShown(r);
      for (let t = 0; t < T; t++) cells[r][t].hidden = !colShown(t);
    }
    for (let t = 0; t < T; t++) for (const th of colHeads[t]) th.hidden = !colShown(t);
    markDepth();
    if (active.hidden || !rowShown(active.mgR)) {
      const rs = shownRows(), ts = shownCols();
      setActive(cells[nearest(rs, active.mgR)][nearest(ts, active.mgT)], false);
    }
    if (pinned) renderPin();
  }
  // The depth view's line sits under the first shown row at or above the position's depth (the PNG's
  // rule when it leaves rows out); there is none where even the top row disagrees (depth = R).
  function markDepth() {
    if (!D.depth) return;
    for (const c of root.querySelectorAll(".mg-settle")) c.classList.remove("mg-settle");
    const rs = shownRows();
    for (let t = 0; t < T; t++) {
      const r = rs.find((row) => row >= D.depth.depth[t]);
      if (D.depth.depth[t] < R && r !== undefined) cells[r][t].classList.add("mg-settle");
    }
  }
  const nearest = (list, x) => list.reduce((best, v) => (Math.abs(v - x) < Math.abs(best - x) ? v : best), list[0]);

  const strideInput = q(".mg-stride"), fromInput = q(".mg-from"), toInput = q(".mg-to");
  fromInput.min = toInput.min = D.start;
  fromInput.max = toInput.max = D.start + T - 1;
  fromInput.value = D.start;
  toInput.value = D.start + T - 1;
  strideInput.max = Math.max(1, lastBlock + 1);
  strideInput.addEventListener("change", () => {
    const s = parseInt(strideInput.value, 10);
    stride = Number.isFinite(s) && s >= 1 ? s : 1;
    strideInput.value = stride;
    applyShown();
  });
  const rangeChanged = () => {
    const clamp = (v, fallback) => { const n = parseInt(v, 10); return Number.isFinite(n) ? Math.min(Math.max(n - D.start, 0), T - 1) : fallback; };
    let a = clamp(fromInput.value, 0), b = clamp(toInput.value, T - 1);
    if (a > b) [a, b] = [b, a];
    from = a;
    to = b;
    fromInput.value = D.start + a;
    toInput.value = D.start + b;
    applyShown();
  };
  fromInput.addEventListener("change", rangeChanged);
  toInput.addEventListener("change", rangeChanged);

  // ------------------------------------------------------------------
  // A token's rank and probability in a row: exact for the three targets and the top K, else "below the top K"

  function tokenIn(id, r, t) {
    const ids = { final: D.final[t], next: D.next[t], input: D.input[t] };
    for (const name of TARGETS) {
      if (ids[name] === id) return { rank: D.targets[name].rank[at(r, t)], prob: D.targets[name].prob[at(r, t)] };
    }
    for (let j = 0; j < K; j++) if (topId(r, t, j) === id) return { rank: j + 1, prob: topProb(r, t, j) };
    return { rank: null, prob: null, below: topProb(r, t, K - 1) };
  }

  // ------------------------------------------------------------------
  // The tooltip: the top K of a cell, and where the final, next and input tokens stand

  const tip = q(".mg-tip");
  function showTip(td) {
    const r = td.mgR, t = td.mgT;
    tip.textContent = "";
    const head = el("div");
    head.append(el("strong", null, D.rows[r].label), el("span", null, " · position " + (D.start + t) + " · input "),
      tokSpan(D.input[t]), el("span", "mg-dim", " (id " + D.input[t] + ")"));
    tip.appendChild(head);
    const view = D.views[current], value = view.values[at(r, t)];
    let says = view.label + ": " + num(value);
    if (view.categories) { // the depth view: the position's depth and first hit, and this row's category
      const row = (i) => (i < R ? D.rows[i].label : "never");
      says = "prediction depth " + row(D.depth.depth[t]) + " (first hit " + row(D.depth.first_hit[t]) + "); this row: " +
        (value === null ? "no value" : view.categories[value].label);
    }
    tip.appendChild(el("div", "mg-dim", says));
    const list = el("table", "mg-top");
    const header = el("tr");
    for (const h of ["#", "top " + K, "id", "p"]) header.appendChild(el("th", null, h));
    list.appendChild(header);
    for (let j = 0; j < K; j++) {
      const id = topId(r, t, j), p = topProb(r, t, j);
      const tr = el("tr", "mg-top-entry");
      tr.dataset.id = id;
      tr.dataset.prob = p === null ? "" : String(p);
      const cell = el("td");
      cell.appendChild(tokSpan(id));
      tr.append(el("td", "mg-num", j + 1), cell, el("td", "mg-num mg-dim", "id " + id), el("td", "mg-num", prob(p)));
      list.appendChild(tr);
    }
    tip.appendChild(list);
    const targets = el("table", "mg-targets");
    for (const name of TARGETS) {
      const id = name === "final" ? D.final[t] : name === "next" ? D.next[t] : D.input[t];
      const tr = el("tr", "mg-target");
      tr.dataset.target = name;
      if (id < 0) {
        tr.dataset.rank = "";
        tr.append(el("td", null, TARGET_WORDS[name]), el("td", "mg-dim", "none: the text ends here"));
      } else {
        const rank = D.targets[name].rank[at(r, t)], p = D.targets[name].prob[at(r, t)];
        tr.dataset.id = id;
        tr.dataset.rank = rank;
        const cell = el("td");
        cell.append(tokSpan(id), el("span", "mg-dim", " id " + id));
        tr.append(el("td", null, TARGET_WORDS[name]), cell, el("td", "mg-num", "rank " + rank), el("td", "mg-num", prob(p)));
      }
      targets.appendChild(tr);
    }
    tip.appendChild(targets);
    const att = attentionSummary(t);
    if (att) tip.appendChild(att);
    tip.hidden = false;
    placeTip(td.getBoundingClientRect());
    showAttention(t);
  }
  // The tooltip goes where it fits inside the window: below the cell, above it, to its right, to its
  // left; where none fits, as low as fits. Never outside it: in a notebook the window is the report's
  // frame, which would cut it off. (Window coordinates; the tooltip is placed relative to root.)
  function placeTip(cell) {
    const w = tip.offsetWidth, h = tip.offsetHeight, gap = 4;
    const W = document.documentElement.clientWidth, H = window.innerHeight;
    const inX = (x) => Math.min(Math.max(x, 0), Math.max(0, W - w)), inY = (y) => Math.min(Math.max(y, 0), Math.max(0, H - h));
    const spots = [
      [inX(cell.left), cell.bottom + gap], [inX(cell.left), cell.top - gap - h],
      [cell.right + gap, inY(cell.top)], [cell.left - gap - w, inY(cell.top)],
    ];
    const fits = ([x, y]) => x >= 0 && y >= 0 && x + w <= W && y + h <= H;
    const [x, y] = spots.find(fits) || [inX(cell.left), inY(cell.bottom + gap)];
    const rr = root.getBoundingClientRect();
    tip.style.left = (x - rr.left) + "px";
    tip.style.top = (y - rr.top) + "px";
  }
  const hideTip = () => { tip.hidden = true; };
  // Whether the focused cell's tooltip comes back when the pointer leaves the grid. Yes after the
  // keyboard moved focus (its user reads the tooltip of the focused cell); no once a pin or Escape
  // closed it, so that a clicked cell's tooltip does not reopen on top of the pin chart.
  let tipOnFocus = false;

  // ------------------------------------------------------------------
  // Pinning: one token at one position, and its rank or probability in every shown row

  const pinPanel = q(".mg-pin");
  let pinned = null; // {r, t, id}
  let chartMode = "rank";
  function pin(td, id) {
    for (const c of root.querySelectorAll(".mg-pinned")) c.classList.remove("mg-pinned");
    pinned = { r: td.mgR, t: td.mgT, id: id };
    td.classList.add("mg-pinned");
    renderPin();
  }
  function unpin() {
    for (const c of root.querySelectorAll(".mg-pinned")) c.classList.remove("mg-pinned");
    pinned = null;
    pinPanel.hidden = true;
    pinPanel.textContent = "";
  }
  function button(text, pressed, onClick) {
    const b = el("button", null, text);
    b.type = "button";
    if (pressed !== null) b.setAttribute("aria-pressed", String(pressed));
    b.addEventListener("click", onClick);
    return b;
  }
  // The chart's two axes, both logarithmic, since ranks and probabilities span decades: a linear
  // probability axis leaves every bar empty at p = 1e-4. The bar's length is the value's place on
  // the axis, whose ticks are drawn under the bars.
  const AXES = {
    rank: { fill: (rank) => 1 - Math.log10(rank) / 3, ticks: [[1000, "1000"], [100, "100"], [10, "10"], [1, "1"]] },
    prob: { fill: (p) => 1 + Math.log10(p) / 6, ticks: [[1e-6, "10⁻⁶"], [1e-4, "10⁻⁴"], [1e-2, "10⁻²"], [1, "1"]] },
  };
  const fillOf = (mode, v) => Math.min(Math.max(AXES[mode].fill(v), 0), 1); // nothing below the axis, full above it
  function chartAxis(mode) {
    const line = el("div", "mg-axis"), track = el("div", "mg-track");
    for (const [v, text] of AXES[mode].ticks) {
      const tick = el("span", null, text);
      tick.dataset.value = v;
      tick.style.left = (100 * fillOf(mode, v)).toFixed(1) + "%";
      track.appendChild(tick);
    }
    line.append(el("span", "mg-label", ""), track, el("span", "mg-num", mode === "rank" ? "rank (log)" : "p (log)"));
    return line;
  }
  function renderPin() {
    const { r, t, id } = pinned;
    pinPanel.textContent = "";
    const h = el("h2");
    h.append(el("span", null, "pinned "), tokSpan(id), el("span", null, " (id " + id + ") at position " + (D.start + t)));
    pinPanel.appendChild(h);
    pinPanel.dataset.id = id;
    pinPanel.dataset.pos = D.start + t;
    const modes = el("div");
    modes.appendChild(el("span", null, "show "));
    for (const [mode, text] of [["rank", "rank"], ["prob", "probability"]]) {
      const b = button(text, chartMode === mode, () => { chartMode = mode; renderPin(); });
      b.dataset.mode = mode;
      modes.appendChild(b);
    }
    pinPanel.appendChild(modes);
    const others = el("div", "mg-others");
    others.appendChild(el("span", "mg-dim", "pin instead (top of " + D.rows[r].label + ", then the final, next and input tokens): "));
    const seen = new Set();
    const choices = [];
    for (let j = 0; j < K; j++) choices.push(topId(r, t, j));
    choices.push(D.final[t], D.next[t], D.input[t]);
    for (const c of choices) {
      if (c < 0 || seen.has(c)) continue;
      seen.add(c);
      const b = button(tok(c), c === id, () => { pinned = { r: r, t: t, id: c }; renderPin(); });
      b.dataset.id = c;
      others.appendChild(b);
    }
    pinPanel.appendChild(others);
    const chart = el("div", "mg-chart");
    chart.dataset.mode = chartMode;
    const rows = shownRows();
    for (let i = rows.length - 1; i >= 0; i--) {
      const rr = rows[i];
      const s = tokenIn(id, rr, t);
      const line = el("div", "mg-bar-row");
      line.dataset.row = D.rows[rr].label;
      line.dataset.rank = s.rank === null ? "" : String(s.rank);
      line.dataset.prob = s.prob === null ? "" : String(s.prob);
      const track = el("div", "mg-track"), fill = el("div", "mg-fill");
      let width = 0, text;
      if (s.rank === null) {
        line.classList.add("mg-unknown");
        text = chartMode === "rank" ? "rank > " + K : "p < " + prob(s.below);
      } else if (chartMode === "rank") {
        width = fillOf("rank", s.rank);
        text = "rank " + s.rank;
      } else {
        width = s.prob === null || s.prob <= 0 ? 0 : fillOf("prob", s.prob);
        text = prob(s.prob);
      }
      fill.style.width = (100 * width).toFixed(1) + "%";
      track.appendChild(fill);
      line.append(el("span", "mg-label", D.rows[rr].label), track, el("span", "mg-num", text));
      chart.appendChild(line);
    }
    chart.appendChild(chartAxis(chartMode));
    pinPanel.appendChild(chart);
    pinPanel.appendChild(el("p", "mg-dim", chartMode === "rank"
      ? "Rank in each row (log scale: rank 1 fills the bar, 1000 and beyond leave it empty). Known exactly in the top " + K +
        " and for the final, next and input tokens."
      : "Probability in each row (log scale: 1 fills the bar, 10⁻⁶ and below leave it empty). Below the top " + K +
        ", only a bound is known (except for the final, next and input tokens)."));
    pinPanel.hidden = false;
  }

  // ------------------------------------------------------------------
  // Attention: for the position in focus, what it reads from each earlier position (one block, one head)

  const A = D.attention;
  const attBytes = {}; // "a,h" -> Uint8Array of the lower triangle
  let attBlock = 0, attHead = 0;
  function weightsOf(a, h) {
    const key = a + "," + h;
    if (!attBytes[key]) {
      const raw = atob(A.heads[a][h].w);
      const bytes = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
      attBytes[key] = bytes;
    }
    return attBytes[key];
  }
  function queryRow(t) { // the weights that position t reads, keyed by report position, or null
    const tq = D.start + t - A.start;
    if (tq < 0 || tq >= A.T) return null;
    const bytes = weightsOf(attBlock, attHead), offset = (tq * (tq + 1)) / 2;
    return { tq: tq, read: (s) => { const ks = D.start + s - A.start; return ks >= 0 && ks <= tq ? bytes[offset + ks] / A.scale : null; } };
  }
  function showAttention(t) {
    if (!A) return;
    const row = queryRow(t);
    const view = { lo: 0, hi: 1, log: false, reversed: false };
    for (let s = 0; s < T; s++) {
      const td = attCells[s];
      const w = row ? row.read(s) : null;
      td.classList.toggle("mg-query", s === t);
      if (w === null) {
        td.textContent = "";
        td.dataset.weight = "";
        td.style.backgroundColor = "";
        td.style.color = "";
      } else {
        const c = colour(view, w);
        td.textContent = String(Math.round(100 * w));
        td.dataset.weight = String(w);
        td.style.backgroundColor = c;
        td.style.color = ink(c);
      }
    }
  }
  function attentionSummary(t) {
    if (!A) return null;
    const row = queryRow(t);
    const box = el("div", "mg-dim");
    if (!row) {
      box.textContent = "no attention data for this position";
      return box;
    }
    const pairs = [];
    for (let s = 0; s < T; s++) { const w = row.read(s); if (w !== null) pairs.push([w, s]); }
    pairs.sort((x, y) => y[0] - x[0]);
    box.append(el("span", null, "block " + A.blocks[attBlock] + ", head " + attHead + " reads: "));
    for (const [w, s] of pairs.slice(0, 3)) box.append(tokSpan(D.input[s]), el("span", null, " @" + (D.start + s) + " " + Math.round(100 * w) + "%  "));
    const before = A.heads[attBlock][attHead].before[row.tq] / A.scale;
    if (before > 0) box.append(el("span", null, "· before position " + A.start + ": " + Math.round(100 * before) + "%"));
    return box;
  }
  if (A) {
    q(".mg-att-controls").hidden = false;
    const blockSelect = q(".mg-att-block"), headSelect = q(".mg-att-head");
    A.blocks.forEach((b, i) => { const o = el("option", null, String(b)); o.value = i; blockSelect.appendChild(o); });
    for (let h = 0; h < A.heads[0].length; h++) { const o = el("option", null, String(h)); o.value = h; headSelect.appendChild(o); }
    blockSelect.addEventListener("change", () => { attBlock = parseInt(blockSelect.value, 10); showAttention(active.mgT); });
    headSelect.addEventListener("change", () => { attHead = parseInt(headSelect.value, 10); showAttention(active.mgT); });
  }

  // ------------------------------------------------------------------
  // Keyboard and mouse: one tab stop (a roving tabindex), the arrow keys move it

  let active = cells[R - 1][0];
  function setActive(td, focus) {
    active.tabIndex = -1;
    active = td;
    td.tabIndex = 0;
    if (focus) td.focus();
  }
  active.tabIndex = 0;

  table.addEventListener("keydown", (event) => {
    const td = event.target;
    if (!td.classList || !td.classList.contains("mg-cell")) return;
    const rs = shownRows(), ts = shownCols();
    const ri = rs.indexOf(td.mgR), ti = ts.indexOf(td.mgT);
    let r = td.mgR, t = td.mgT;
    switch (event.key) {
      case "ArrowUp": r = rs[Math.min(ri + 1, rs.length - 1)]; break; // up is the next layer
      case "ArrowDown": r = rs[Math.max(ri - 1, 0)]; break;
      case "ArrowLeft": t = ts[Math.max(ti - 1, 0)]; break;
      case "ArrowRight": t = ts[Math.min(ti + 1, ts.length - 1)]; break;
      case "Home": t = ts[0]; break;
      case "End": t = ts[ts.length - 1]; break;
      case "PageUp": r = rs[rs.length - 1]; break;
      case "PageDown": r = rs[0]; break;
      case "Enter": case " ": pin(td, topId(td.mgR, td.mgT, 0)); closeTip(); event.preventDefault(); return;
      case "Escape": unpin(); closeTip(); event.preventDefault(); return;
      default: return;
    }
    event.preventDefault();
    setActive(cells[r][t], true);
  });
  function closeTip() {
    tipOnFocus = false;
    hideTip();
  }
  table.addEventListener("focusin", (event) => {
    if (!event.target.classList.contains("mg-cell")) return;
    setActive(event.target, false);
    tipOnFocus = true;
    showTip(event.target);
  });
  table.addEventListener("focusout", hideTip);
  table.addEventListener("mouseover", (event) => {
    const td = event.target.closest ? event.target.closest("td.mg-cell") : null;
    if (td) showTip(td);
  });
  table.addEventListener("mouseleave", () => {
    const focused = document.activeElement;
    if (tipOnFocus && root.contains(focused) && focused.classList.contains("mg-cell")) showTip(focused);
    else hideTip();
  });
  table.addEventListener("click", (event) => {
    const td = event.target.closest ? event.target.closest("td.mg-cell") : null;
    if (!td) return;
    setActive(td, true);
    pin(td, topId(td.mgR, td.mgT, 0));
    closeTip(); // the chart is what the click asked for: the tooltip must not cover it
  });

  applyView(current);
  markDepth();
  // In a notebook the report sits in a sandboxed frame, which cannot size itself: it tells the page
  // around it its height whenever that changes (a pin panel opens, the controls wrap), and
  // notebook_html's script there sets the frame's height. Only a number crosses over.
  if (window.parent !== window) {
    root.classList.add("mg-framed");
    const html = document.documentElement;
    new ResizeObserver(() => {
      window.parent.postMessage({ minigptReportHeight: Math.ceil(html.getBoundingClientRect().height) }, "*");
    }).observe(html);
  }
  if (A) showAttention(0);
  root.dataset.ready = "true"; // for tests and tools: the page is built
})();
