// Click a header of a table.sortable to sort its rows; click again to reverse. Numbers sort as numbers
// (from data-value), text as text; empty cells always go last. Each tbody sorts on its own, so the rows shown
// apart (partial runs, other protocols) stay below the ranked ones; a tr.apart-head stays on top of its body.
// An input[data-filter] hides the rows of the tables it names whose text does not contain what is typed.
// No dependencies.
"use strict";
(function () {
  function cellKey(row, index, numeric) {
    const cell = row.cells[index];
    const raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (raw === "" || raw === "-") return null;
    if (numeric) {
      const v = parseFloat(raw);
      return Number.isNaN(v) ? null : v;
    }
    return raw.toLowerCase();
  }
  function sortBy(table, th) {
    const headers = Array.from(th.parentNode.children);
    const index = headers.indexOf(th);
    const numeric = th.dataset.type === "number";
    // numbers: best (largest) first on the first click; text: A to Z first
    const first = numeric ? "descending" : "ascending";
    const next = th.getAttribute("aria-sort") === first ? (first === "ascending" ? "descending" : "ascending") : first;
    headers.forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", next);
    const sign = next === "ascending" ? 1 : -1;
    Array.from(table.tBodies).forEach((body) => {
      const rows = Array.from(body.rows).filter((r) => !r.classList.contains("apart-head"));
      rows.sort((a, b) => {
        const ka = cellKey(a, index, numeric);
        const kb = cellKey(b, index, numeric);
        if (ka === null && kb === null) return 0;
        if (ka === null) return 1;
        if (kb === null) return -1;
        return ka < kb ? -sign : ka > kb ? sign : 0;
      });
      rows.forEach((r) => body.appendChild(r));
    });
  }
  function applyFilter(input) {
    const words = input.value.toLowerCase().split(/\s+/).filter((w) => w);
    let shown = 0;
    document.querySelectorAll(input.dataset.filter).forEach((table) => {
      Array.from(table.tBodies).forEach((body) => {
        let visible = 0;
        Array.from(body.rows).forEach((r) => {
          if (r.classList.contains("apart-head")) return;
          const text = r.textContent.toLowerCase();
          const keep = words.every((w) => text.includes(w));
          r.hidden = !keep;
          if (keep) visible += 1;
        });
        const head = body.querySelector("tr.apart-head");
        if (head) head.hidden = visible === 0;
        shown += visible;
      });
    });
    const count = document.getElementById(input.id + "-count");
    if (count) count.textContent = words.length ? shown + " shown" : "";
  }
  document.querySelectorAll("input[data-filter]").forEach((input) => {
    input.addEventListener("input", () => applyFilter(input));
    if (input.value) applyFilter(input);
  });
  document.querySelectorAll("table.sortable").forEach((table) => {
    table.querySelectorAll("thead th").forEach((th) => {
      th.tabIndex = 0;
      th.addEventListener("click", () => sortBy(table, th));
      th.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  });
})();
