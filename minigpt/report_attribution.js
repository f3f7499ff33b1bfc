// minigpt's attribution panel: appended to the lens report's script when the report carries attribution data
// (minigpt/attribution.py: report_attribution). Clicking a cell, or Enter on it, opens the top components
// that wrote that cell's top-1 token at its row and position, as a bar list with the total and the gap.
// Text is written with textContent only; bar sizes through the CSSOM (the page's policy allows no inline style).
(function () {
  "use strict";
  const script = document.currentScript;
  const root = script.parentElement;
  const D = JSON.parse(script.previousElementSibling.textContent);
  const A = D.attribution;
  if (!A) return;
  const table = root.querySelector(".mg-grid");

  const el = mgElement;
  const tok = (id) => mgToken(D, id);

  const panel = el("section", "mg-att-panel");
  panel.hidden = true;
  panel.setAttribute("aria-live", "polite");
  panel.style.margin = "0.8em 0";
  panel.style.padding = "0.5em 0.8em";
  panel.style.border = "1px solid #bbb";
  panel.style.maxWidth = "44em";
  const main = root.querySelector(".mg-main");
  main.parentNode.insertBefore(panel, main.nextSibling);

  function show(td) {
    const row = td.dataset.row, pos = parseInt(td.dataset.pos, 10);
    const cells = A.cells[row];
    const t = pos - A.start;
    if (!cells || t < 0 || t >= cells.length) return;
    const cell = cells[t];
    panel.replaceChildren();
    panel.dataset.row = row;
    panel.dataset.pos = String(pos);
    panel.dataset.id = String(cell.id);
    const head = el("h2", "mg-att-title", "Which components wrote " + JSON.stringify(tok(cell.id)) +
      " at row " + row + ", position " + pos);
    head.style.fontSize = "1em";
    head.style.margin = "0 0 0.3em 0";
    panel.appendChild(head);
    panel.appendChild(el("p", "mg-att-sum", "logit " + cell.total.toFixed(4) + " = the sum of every component (" +
      (A.by === "neuron" ? "heads, neurons" : "heads") + ", biases, embeddings); gap " + cell.gap.toExponential(1) +
      ", float rounding only. Top " + cell.top.length + " by |value|:"));
    const scale = Math.max(1e-12, ...cell.top.map((c) => Math.abs(c[1])));
    const list = el("ol", "mg-att-list");
    list.style.listStyle = "none";
    list.style.padding = "0";
    for (const [label, value] of cell.top) {
      const li = el("li", "mg-att-item");
      li.dataset.label = label;
      li.dataset.value = String(value);
      li.style.display = "flex";
      li.style.alignItems = "center";
      li.style.gap = "0.6em";
      const name = el("span", "mg-att-label", label);
      name.style.fontFamily = "monospace";
      name.style.minWidth = "12em";
      const bar = el("span", "mg-att-bar");
      bar.style.display = "inline-block";
      bar.style.height = "0.8em";
      bar.style.width = (12 * Math.abs(value) / scale).toFixed(2) + "em";
      bar.style.background = value >= 0 ? "#b2182b" : "#2166ac";
      const num = el("span", "mg-att-value", (value >= 0 ? "+" : "") + value.toFixed(4));
      num.style.fontFamily = "monospace";
      li.append(name, bar, num);
      list.appendChild(li);
    }
    panel.appendChild(list);
    const close = el("button", "mg-att-close", "close");
    close.type = "button";
    close.addEventListener("click", () => { panel.hidden = true; });
    panel.appendChild(close);
    panel.hidden = false;
  }

  function cellOf(target) {
    const td = target.closest ? target.closest("td") : null;
    return td && td.dataset.row && td.dataset.pos !== undefined ? td : null;
  }
  table.addEventListener("click", (event) => { const td = cellOf(event.target); if (td) show(td); });
  table.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    const td = cellOf(event.target);
    if (td) show(td);
  });
  root.dataset.attributionReady = "true"; // for tests and tools: the panel is wired
})();
