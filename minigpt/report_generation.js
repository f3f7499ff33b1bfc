// The HTML report's generation mode: the lens while the model samples (minigpt.report.generation_html).
// Steps run across and rows go up; the sampled token sits on top; each cell shows the row's top-1 with
// the row's rank of the sampled token, coloured by that rank. A toggle switches between the lenses.
// Hover or focus a cell for its top-k; click or Enter pins it, Escape unpins. Token text is data:
// it only ever reaches the page through textContent (report_dom.js runs first: mgElement, mgToken).
(function () {
  const root = document.currentScript.closest(".mg-report");
  const q = (sel) => root.querySelector(sel);
  const data = JSON.parse(q(".mg-data").textContent);
  const grid = q(".mg-grid"), tip = q(".mg-tip"), pin = q(".mg-pin"), select = q(".mg-lens");
  const text = (id) => mgToken(data, id);
  const shown = (s) => s.replace(/ /g, "\u2423").replace(/\n/g, "\u23ce").replace(/\t/g, "\u21e5");
  const el = mgElement;
  // rank 1 .. 1000, log scale: dark (rank 1) to light (1000 and beyond), as the PNG view's viridis_r.
  const colour = (rank) => {
    const x = Math.min(1, Math.log10(Math.max(1, rank)) / 3);
    const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    const f = (1 - x) * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(f)), t = f - i;
    const c = stops[i].map((v, j) => Math.round(v + (stops[i + 1][j] - v) * t));
    return { bg: "rgb(" + c.join(",") + ")", fg: 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 140 ? "#000" : "#fff" };
  };
  let lens = data.lenses[0];
  let pinned = null;

  function topList(r, s) {
    const box = el("div");
    box.appendChild(el("div", "mg-tip-head", lens.rows[r] + ", step " + s + ": sampled " +
      JSON.stringify(text(data.steps[s])) + " at rank " + lens.rank[r][s]));
    const list = el("ol", "mg-topk");
    lens.top_ids[r][s].forEach((id, j) => {
      const li = el("li", "", shown(text(id)) + "  " + (100 * lens.top_probs[r][s][j]).toFixed(1) + "%  #" + id);
      if (id === data.steps[s]) li.className = "mg-sampled";
      list.appendChild(li);
    });
    box.appendChild(list);
    return box;
  }

  function show(td, where) {
    where.replaceChildren(topList(Number(td.dataset.r), Number(td.dataset.step)));
    where.hidden = false;
  }

  function build() {
    grid.replaceChildren();
    const head = el("tr");
    head.appendChild(el("th", "mg-label", "sampled"));
    data.steps.forEach((id) => head.appendChild(el("th", "mg-next mg-sampled-token", shown(text(id)))));
    grid.appendChild(head);
    for (let r = lens.rows.length - 1; r >= 0; r--) { // rows go up: the top row first
      const tr = el("tr");
      tr.appendChild(el("th", "mg-label", lens.rows[r]));
      data.steps.forEach((id, s) => {
        const rank = lens.rank[r][s], top1 = lens.top_ids[r][s][0];
        const td = el("td", "mg-cell" + (top1 === id ? " mg-hit" : ""), shown(text(top1)) + " " + rank);
        const c = colour(rank);
        td.style.background = c.bg;
        td.style.color = c.fg;
        Object.assign(td.dataset, { row: lens.rows[r], r: String(r), step: String(s), rank: String(rank), top1: String(top1) });
        td.tabIndex = 0;
        tr.appendChild(td);
      });
      grid.appendChild(tr);
    }
    q(".mg-decoder").textContent = lens.title + (lens.note ? " (" + lens.note + ")" : "");
  }

  grid.addEventListener("mouseover", (e) => {
    const td = e.target.closest("td.mg-cell");
    if (td) show(td, tip);
  });
  grid.addEventListener("focusin", (e) => {
    const td = e.target.closest("td.mg-cell");
    if (td) show(td, tip);
  });
  grid.addEventListener("mouseleave", () => { tip.hidden = true; });
  grid.addEventListener("click", (e) => {
    const td = e.target.closest("td.mg-cell");
    if (!td) return;
    pinned = td;
    show(td, pin);
  });
  root.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { pinned = null; pin.hidden = true; tip.hidden = true; }
    if (e.key === "Enter" && e.target.matches("td.mg-cell")) { pinned = e.target; show(e.target, pin); }
  });
  data.lenses.forEach((l, i) => select.appendChild(Object.assign(el("option", "", l.label), { value: String(i) })));
  select.addEventListener("change", () => {
    lens = data.lenses[Number(select.value)];
    pinned = null;
    pin.hidden = true;
    tip.hidden = true;
    build();
  });
  q(".mg-title").textContent = data.title;
  build();
  root.dataset.ready = "true"; // for tests and tools: the page is built
})();
