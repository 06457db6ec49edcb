// The catalog page's own script: filters, budget, selection, plots, rank flips and the
// entries table, all from the JSON in #catalog-data. The rules mirror ofa_deploy.catalog
// (pareto() and select()), which the tests use as the oracle.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("catalog-data").textContent);
  const TARGETS = DATA.targets;
  const ENVS = DATA.environments;
  const PLOT_CONFIG = { displaylogo: false, responsive: true };
  const STEPS = 1000;
  const state = { kind: "latency", pos: STEPS, allowUnstable: false, devices: new Set(), precisions: new Set(),
                  sortCol: null, sortDir: 1, budget: null };

  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmt = (x, digits) => (x === null || x === undefined ? "-" : Number(x).toFixed(digits));
  const metric = (e) => (state.kind === "latency" ? e.p90 : e.mflops);

  function visibleEntries(target) {
    return target.entries.filter((e) => state.precisions.has(e.precision));
  }

  // -- rules shared with the Python library ------------------------------------------------
  function front(items, x) {
    // entries no other beats on both accuracy (higher) and x (lower), smallest x first
    const ranked = items.filter((e) => e.accuracy !== null)
      .sort((a, b) => x(a) - x(b) || b.accuracy - a.accuracy);
    const out = [];
    let best = -Infinity;
    for (const e of ranked) {
      if (e.accuracy > best) { out.push(e); best = e.accuracy; }
    }
    return out;
  }

  function select(items, budget) {
    const usable = items.filter((e) => e.accuracy !== null && (state.allowUnstable || !e.unstable) && e.onnx_found);
    if (!usable.length) return { entry: null, fastest: null, usable: 0 };
    let best = null;
    for (const e of usable) {
      if (metric(e) > budget) continue;
      // the first entry of the highest (accuracy, -p90), as Python's max() keeps
      if (best === null || e.accuracy > best.accuracy || (e.accuracy === best.accuracy && e.p90 < best.p90)) best = e;
    }
    let fastest = null;
    for (const e of usable) {
      if (fastest === null || e.p90 < fastest.p90 || (e.p90 === fastest.p90 && e.accuracy > fastest.accuracy)) fastest = e;
    }
    return { entry: best, fastest: fastest, usable: usable.length };
  }

  // -- budget ---------------------------------------------------------------------------
  function budgetRange() {
    let lo = Infinity, hi = -Infinity;
    for (const t of TARGETS) {
      if (!state.devices.has(t.name)) continue;
      for (const e of visibleEntries(t)) { lo = Math.min(lo, metric(e)); hi = Math.max(hi, metric(e)); }
    }
    return lo <= hi ? [lo, hi] : null;
  }

  function budgetValue() {
    const range = budgetRange();
    if (range === null) return null;
    const [lo, hi] = range;
    if (state.pos >= STEPS) return hi;
    if (state.pos <= 0 || lo <= 0) return lo + (hi - lo) * state.pos / STEPS;
    return lo * Math.pow(hi / lo, state.pos / STEPS);  // log scale: latencies span decades
  }

  // The budget as a command-line number: the fewest significant digits (2 or more), rounded
  // up, that admit no entry of the target the exact budget leaves out, so the command
  // picks what the page picks (1.5470389997972234 ms -> 1.55).
  function budgetText(budget, items) {
    if (!(budget > 0) || !isFinite(budget)) return String(budget);
    const exponent = Math.floor(Math.log10(budget));
    for (let digits = 2; digits <= 17; digits++) {
      let rounded = Number(budget.toPrecision(digits));
      if (rounded < budget) rounded = Number((rounded + Math.pow(10, exponent - digits + 1)).toPrecision(digits));
      if (rounded >= budget && !items.some((e) => metric(e) > budget && metric(e) <= rounded)) return String(rounded);
    }
    return String(budget);
  }

  // -- drawing ----------------------------------------------------------------------------
  function hover(e) {
    return esc(e.text) + "<br>accuracy " + fmt(e.accuracy, 4) + " &middot; " + fmt(e.mflops, 2) + " MFLOPs" +
      "<br>p50 " + fmt(e.p50, 4) + " &middot; p90 " + fmt(e.p90, 4) + " &middot; p99 " + fmt(e.p99, 4) + " ms" +
      "<br>CoV " + fmt(100 * e.cov, 1) + "%" + (e.unstable ? " UNSTABLE" : "") + (e.backend_mismatch ? " BACKEND MISMATCH" : "") +
      " &middot; " + esc(e.precision) + dropText(e) +
      " &middot; " + esc(e.source);
  }

  // an fp16/int8 entry's recorded top-1 drop against fp32, and the int8 bound it was made under
  function dropText(e) {
    if (e.precision === "fp32" || e.drop_points === null || e.drop_points === undefined) return "";
    return " (drop " + fmt(e.drop_points, 2) + " pt" + (e.max_drop !== null && e.max_drop !== undefined
      ? ", bound " + fmt(e.max_drop, 2) + ", " + fmt(e.reverted, 0) + " nodes float" : "") + ")";
  }

  function panel(target, items, chosen, x, xTitle, isBudgetAxis) {
    const withAcc = items.filter((e) => e.accuracy !== null);
    const onFront = front(withAcc, x);
    const frontKeys = new Set(onFront);
    const trace = (list, name, marker, mode) => ({
      type: "scatter", mode: mode || "markers", name: name, x: list.map(x), y: list.map((e) => e.accuracy),
      text: list.map(hover), hoverinfo: "text", marker: marker,
    });
    const traces = [
      trace(withAcc.filter((e) => !frontKeys.has(e) && !e.unstable), "entries", { color: "#999", size: 6 }),
      trace(onFront, "Pareto front", { color: "#d62728", size: 8 }, "lines+markers"),
      trace(withAcc.filter((e) => e.unstable), "unstable latency",
        { color: "rgba(0,0,0,0)", size: 11, line: { color: "#ff7f0e", width: 2 } }),
      trace(chosen ? [chosen] : [], "selected", { color: "#2ca02c", size: 16, symbol: "star",
        line: { color: "#114411", width: 1 } }),
    ];
    const shapes = isBudgetAxis && state.budget !== null ? [{ type: "line", xref: "x", yref: "paper",
      x0: state.budget, x1: state.budget, y0: 0, y1: 1, line: { color: "#2ca02c", dash: "dot", width: 2 } }] : [];
    // a fixed x range (the data's, on a log axis) keeps the plot still while the budget line moves
    const xs = items.map(x).filter((v) => v > 0);
    const span = xs.length ? [Math.log10(Math.min(...xs)), Math.log10(Math.max(...xs))] : [0, 1];
    const pad = Math.max(0.05, 0.06 * (span[1] - span[0]));
    const layout = {
      title: { text: esc(target.name) + ": accuracy vs " + xTitle + " (" + onFront.length + " on the front)",
               font: { size: 13 }, x: 0.01, xanchor: "left" },
      xaxis: { title: { text: xTitle }, type: "log", range: [span[0] - pad, span[1] + pad] },
      yaxis: { title: { text: "top-1 accuracy" } },
      margin: { l: 55, r: 10, t: 60, b: 45 }, height: 380, shapes: shapes,
      legend: { orientation: "h", y: -0.22, font: { size: 10 } },
    };
    return { traces: traces, layout: layout };
  }

  function drawPlots(selections) {
    TARGETS.forEach((t, i) => {
      const box = $("target-" + i);
      const shown = state.devices.has(t.name);
      box.hidden = !shown;
      if (!shown) return;
      const items = visibleEntries(t);
      const chosen = selections[t.name] ? selections[t.name].entry : null;
      const lat = panel(t, items, chosen, (e) => e.p90, "measured p90 latency (ms)", state.kind === "latency");
      const mf = panel(t, items, chosen, (e) => e.mflops, "MFLOPs", state.kind === "mflops");
      Plotly.react("plot-lat-" + i, lat.traces, lat.layout, PLOT_CONFIG);
      Plotly.react("plot-mf-" + i, mf.traces, mf.layout, PLOT_CONFIG);
      const missing = items.length - items.filter((e) => e.accuracy !== null).length;
      $("target-note-" + i).textContent = missing ? missing + " entries without an accuracy are not plotted" : "";
    });
  }

  function drawSelection(selections) {
    const rows = [];
    for (const t of TARGETS) {
      if (!state.devices.has(t.name)) continue;
      const s = selections[t.name];
      const e = s.entry;
      if (e) {
        const flag = (state.kind === "latency" ? "--max-latency-ms " : "--max-mflops ") + budgetText(state.budget, t.entries);
        const cmd = "ofa-deploy catalog select --catalog " + DATA.catalog + " --target " + t.name + " " + flag +
          (state.allowUnstable ? " --allow-unstable" : "") + (DATA.batch !== 1 ? " --batch " + DATA.batch : "");
        rows.push('<tr data-target="' + esc(t.name) + '" data-key="' + esc(e.key) + '" data-precision="' +
          esc(e.precision) + '"><td>' + esc(t.name) + "</td><td>" + esc(e.text) + (e.unstable ? " (unstable)" : "") +
          (e.backend_mismatch ? ' <span title="' + esc(e.backend_mismatch) + '">(backend mismatch)</span>' : "") + "</td><td>" + esc(e.precision) + '<small>' + dropText(e) + '</small></td><td class="num">' + fmt(e.accuracy, 4) + '</td><td class="num">' +
          fmt(e.p90, 4) + '</td><td class="num">' + fmt(e.mflops, 2) + "</td><td><code>" + esc(cmd) +
          "</code></td></tr>");
      } else {
        const why = s.usable === 0 ? "no usable entry (accuracy, stable latency, ONNX file)"
          : "nothing within the budget; the fastest is " + s.fastest.text + " (p90 " + fmt(s.fastest.p90, 4) +
            " ms, " + fmt(s.fastest.mflops, 2) + " MFLOPs)";
        rows.push('<tr data-target="' + esc(t.name) + '" data-key=""><td>' + esc(t.name) +
          '</td><td class="none" colspan="6">' + esc(why) + "</td></tr>");
      }
    }
    $("selected").tBodies[0].innerHTML = rows.join("");
  }

  // -- rank flips -------------------------------------------------------------------------
  function drawFlips() {
    const a = TARGETS.find((t) => t.name === $("flip-a").value);
    const b = TARGETS.find((t) => t.name === $("flip-b").value);
    const body = $("flip-table").tBodies[0];
    // with one target there is nothing to compare: a sentence, no controls, plot or table
    const one = TARGETS.length < 2;
    $("flip-controls").hidden = one;
    $("flip-table").hidden = one;
    $("flip-note").hidden = one;
    if (!a || !b || a === b) {
      $("flip-summary").textContent = one
        ? "Rank flips need measurements on two targets; this page has one (" + (TARGETS[0] || {}).name + ")."
        : "Choose two different targets.";
      Plotly.purge("flip-plot");
      $("flip-plot").hidden = true;
      $("flip-table").hidden = true;
      body.innerHTML = "";
      return;
    }
    // each target at its main precision (the one most of its shown entries have): a CPU's fp32
    // against a Jetson's fp16 is the comparison that matters
    const atMain = (t) => {
      const items = visibleEntries(t);
      const count = new Map();
      items.forEach((e) => count.set(e.precision, (count.get(e.precision) || 0) + 1));
      const main = Array.from(count).sort((p, q) => q[1] - p[1] || (p[0] < q[0] ? -1 : 1)).map((p) => p[0])[0];
      return { precision: main || "nothing shown", items: items.filter((e) => e.precision === main) };
    };
    const sideA = atMain(a), sideB = atMain(b);
    const onB = new Map(sideB.items.map((e) => [e.key, e]));
    const common = sideA.items.filter((e) => onB.has(e.key)).map((e) => ({ a: e, b: onB.get(e.key) }));
    const rankBy = (side) => {
      common.slice().sort((p, q) => p[side].p90 - q[side].p90 || (p.a.key < q.a.key ? -1 : 1))
        .forEach((p, i) => { p["rank_" + side] = i + 1; });
    };
    rankBy("a");
    rankBy("b");
    let discordant = 0;
    for (let i = 0; i < common.length; i++) {
      for (let j = i + 1; j < common.length; j++) {
        if ((common[i].rank_a - common[j].rank_a) * (common[i].rank_b - common[j].rank_b) < 0) discordant++;
      }
    }
    const pairs = common.length * (common.length - 1) / 2;
    $("flip-summary").textContent = common.length + " subnets measured on both " + a.name + " (" + sideA.precision +
      ") and " + b.name + " (" + sideB.precision + ")" +
      "; " + discordant + " of " + pairs + " pairs change order" +
      (pairs ? " (Kendall tau " + (1 - 2 * discordant / pairs).toFixed(3) + ")" : "") + ".";
    $("flip-summary").dataset.common = common.length;
    $("flip-summary").dataset.discordant = discordant;
    const lines = (list) => {
      const x = [], y = [], text = [];
      for (const p of list) {
        x.push(a.name, b.name, null);
        y.push(p.rank_a, p.rank_b, null);
        text.push(hover(p.a), hover(p.b), "");
      }
      return { x: x, y: y, text: text };
    };
    const moved = common.filter((p) => p.rank_a !== p.rank_b);
    const kept = common.filter((p) => p.rank_a === p.rank_b);
    const traces = [[kept, "same rank", "#999"], [moved, "rank changed", "#d62728"]].map(([list, name, color]) =>
      Object.assign({ type: "scatter", mode: "lines+markers", name: name, hoverinfo: "text",
                      line: { color: color, width: 1 }, marker: { color: color, size: 5 } }, lines(list)));
    $("flip-plot").hidden = false;
    Plotly.react("flip-plot", traces, {
      height: 420, margin: { l: 55, r: 10, t: 30, b: 40 }, legend: { orientation: "h", x: 0, y: 1.08 },
      xaxis: { type: "category", categoryorder: "array", categoryarray: [a.name, b.name] },
      yaxis: { title: { text: "rank by p90 latency (1 = fastest)" }, autorange: "reversed" },
    }, PLOT_CONFIG);
    const top = moved.slice().sort((p, q) => Math.abs(q.rank_a - q.rank_b) - Math.abs(p.rank_a - p.rank_b) ||
      p.rank_a - q.rank_a).slice(0, 25);
    body.innerHTML = top.map((p) => "<tr><td>" + esc(p.a.text) + "</td><td>" + esc(p.a.precision + " / " + p.b.precision) +
      '</td><td class="num">' + p.rank_a + '</td><td class="num">' + p.rank_b + '</td><td class="num">' +
      (p.rank_a - p.rank_b > 0 ? "+" : "") + (p.rank_a - p.rank_b) + '</td><td class="num">' + fmt(p.a.p90, 4) +
      '</td><td class="num">' + fmt(p.b.p90, 4) + "</td></tr>").join("");
  }

  // -- entries table ----------------------------------------------------------------------
  const COLUMNS = [
    ["target", "target", false], ["text", "subnet", false], ["precision", "precision", false],
    ["mflops", "MFLOPs", true, 2], ["params", "params", true, 0], ["accuracy", "accuracy", true, 4],
    ["accuracy_split", "measured on", false], ["chosen_on", "chosen on", false],
    ["p50", "p50 ms", true, 4], ["p90", "p90 ms", true, 4], ["p99", "p99 ms", true, 4],
    ["cov", "CoV %", true, 2, 100], ["n", "n", true, 0], ["unstable", "unstable", false],
    ["backend", "backend", false], ["latency_kind", "latency of", false], ["source", "source", false],
    ["envText", "environment", false], ["measured_at", "measured", false], ["onnx", "ONNX", false],
    ["onnx_sha256", "ONNX sha256", false],
  ];
  const ROWS = [];
  for (const t of TARGETS) {
    for (const e of t.entries) {
      const env = ENVS[e.env] ? ENVS[e.env].summary : {};
      ROWS.push(Object.assign({ target: t.name, envText: Object.keys(env).map((k) => k + "=" + env[k]).join(" "),
                                envFull: JSON.stringify(ENVS[e.env] ? ENVS[e.env].full : {}) }, e));
    }
  }

  function cell(row, col) {
    const [key, , numeric, digits, scale] = col;
    const v = row[key];
    if (numeric) return '<td class="num">' + (v === null ? "-" : Number(v * (scale || 1)).toFixed(digits)) + "</td>";
    if (key === "unstable") return "<td>" + (v ? "UNSTABLE" : "") + "</td>";
    if (key === "backend" && row.backend_mismatch) {
      return '<td title="' + esc(row.backend_mismatch) + '">' + esc(v) + " (BACKEND MISMATCH)</td>";
    }
    if (key === "envText") return '<td title="' + esc(row.envFull) + '">' + esc(v) + "</td>";
    if (key === "onnx") return "<td>" + esc(v || "-") + (v && !row.onnx_found ? " (missing here)" : "") + "</td>";
    if (key === "chosen_on") return "<td>" + esc(v || (row.accuracy === null ? "" : "not recorded")) + "</td>";
    if (key === "onnx_sha256") return '<td title="' + esc(v) + '"><code>' + esc(v ? v.slice(0, 16) : "-") + "</code></td>";
    return "<td>" + esc(v) + "</td>";
  }

  function drawTable() {
    const rows = ROWS.filter((r) => state.devices.has(r.target) && state.precisions.has(r.precision));
    if (state.sortCol !== null) {
      const [key, , numeric] = COLUMNS[state.sortCol];
      const cmp = numeric
        ? (p, q) => (p[key] === null) - (q[key] === null) || state.sortDir * (p[key] - q[key])
        : (p, q) => state.sortDir * String(p[key]).localeCompare(String(q[key]));
      rows.sort(cmp);  // stable: ties keep the catalog's order
    }
    $("entries").tBodies[0].innerHTML = rows.map((r) => '<tr data-key="' + esc(r.key) + '"' +
      (r.unstable ? ' class="unstable"' : "") + ">" + COLUMNS.map((c) => cell(r, c)).join("") + "</tr>").join("");
    $("entry-count").textContent = "Showing " + rows.length + " of " + ROWS.length + " entries (click a column to sort).";
    $("entries").dataset.shown = rows.length;
    Array.from($("entries").tHead.rows[0].cells).forEach((th, i) => {
      th.className = i === state.sortCol ? (state.sortDir > 0 ? "sorted-asc" : "sorted-desc") : "";
    });
  }

  // -- the search behind --from-search entries ---------------------------------------------
  function drawSearches() {
    const list = DATA.searches || [];
    $("search-section").hidden = list.length === 0;
    $("searches").innerHTML = list.map((s, i) => {
      const rho = s.rounds.filter((r) => r.heldout_spearman !== null).map((r) => fmt(r.heldout_spearman, 2));
      const picks = s.picks.map((p) => "<tr><td>" + (p.budget === null ? "-" : "\u2264 " + fmt(p.budget, 3) + " " +
        esc(s.unit)) + "</td><td>" + esc(p.subnet || "no evaluated subnet within it") + '</td><td class="num">' +
        fmt(p.accuracy, 4) + '</td><td class="num">' + fmt(p.cost, 4) + "</td></tr>").join("");
      return '<div class="search" id="search-' + i + '"><h3>' + esc(s.target) + "</h3><p class=\"search-summary\">" +
        "search <code>" + esc(s.search_dir) + "</code>: " + esc(s.evaluations) + " subnets evaluated" +
        (s.ranks > 1 ? " over " + esc(s.ranks) + " ranks" : "") + ", chosen on <b>" + esc(s.chosen_on) + "</b> (" +
        esc(s.chosen_on_images) + " images), " + esc(s.model) + " accuracy predictor, seed " + esc(s.seed) +
        (rho.length ? "; held-out Spearman per round " + rho.join(", ") : "") + "</p>" +
        '<div class="plot" id="search-plot-' + i + '"></div>' +
        '<table class="search-picks"><thead><tr><th>budget</th><th>pick</th><th>accuracy (' + esc(s.chosen_on) +
        ")</th><th>cost (" + esc(s.unit) + ")</th></tr></thead><tbody>" + picks + "</tbody></table></div>";
    }).join("");
    list.forEach((s, i) => {
      const pts = (rows, name, marker, mode) => ({ type: "scatter", mode: mode || "markers", name: name,
        x: rows.map((r) => r.cost), y: rows.map((r) => r.accuracy), hoverinfo: "text", marker: marker,
        text: rows.map((r) => esc(r.subnet) + "<br>accuracy " + fmt(r.accuracy, 4) + " &middot; " + fmt(r.cost, 4) +
          " " + esc(s.unit)) });
      const traces = [
        pts(s.evaluated, "evaluated", { color: "#999", size: 6 }),
        pts(s.front, "front (evaluated)", { color: "#d62728", size: 7 }, "lines+markers"),
        pts(s.picks.filter((p) => p.subnet), "pick per budget", { color: "#2ca02c", size: 14, symbol: "star" }),
      ];
      const unit = s.unit === "ms" ? "predicted upper bound (ms)" : "MFLOPs";
      Plotly.newPlot("search-plot-" + i, traces, {
        title: { text: esc(s.target) + ": the search's evaluations", font: { size: 13 }, x: 0.01, xanchor: "left" },
        xaxis: { title: { text: unit } }, yaxis: { title: { text: "accuracy on " + esc(s.chosen_on) } },
        margin: { l: 55, r: 10, t: 50, b: 45 }, height: 340, legend: { orientation: "h", y: -0.25, font: { size: 10 } },
      }, PLOT_CONFIG);
    });
  }

  // -- wiring -----------------------------------------------------------------------------
  function update() {
    state.budget = budgetValue();
    const unit = state.kind === "latency" ? " ms (p90)" : " MFLOPs";
    $("budget-value").textContent = state.budget === null ? "no entries shown" : "\u2264 " + state.budget.toPrecision(4) + unit;
    $("budget-value").dataset.value = state.budget === null ? "" : String(state.budget);
    const selections = {};
    for (const t of TARGETS) {
      if (state.devices.has(t.name)) selections[t.name] = select(visibleEntries(t), state.budget === null ? -Infinity : state.budget);
    }
    drawSelection(selections);
    drawPlots(selections);
  }

  function checkboxes(holder, values, set, onChange) {
    holder.innerHTML = values.map((v) => '<label><input type="checkbox" checked value="' + esc(v) + '"> ' + esc(v) +
      "</label>").join("");
    values.forEach((v) => set.add(v));
    holder.addEventListener("change", (ev) => {
      if (ev.target.checked) set.add(ev.target.value); else set.delete(ev.target.value);
      onChange();
    });
  }

  function init() {
    const total = ROWS.length;
    $("summary").textContent = total + " entries on " + TARGETS.length + " target(s) at batch " + DATA.batch + "; " +
      DATA.counts.subnets + " subnets, " + DATA.counts.latency + " latency measurements";
    $("plots").innerHTML = TARGETS.map((t, i) => '<div class="target-plots" id="target-' + i + '"><h3>' + esc(t.name) +
      ' <small class="note" id="target-note-' + i + '"></small></h3><div class="plot" id="plot-lat-' + i +
      '"></div><div class="plot" id="plot-mf-' + i + '"></div></div>').join("");
    const precisions = Array.from(new Set(ROWS.map((r) => r.precision))).sort();
    checkboxes($("device-filter"), TARGETS.map((t) => t.name), state.devices, () => { update(); drawTable(); });
    checkboxes($("precision-filter"), precisions, state.precisions, () => { update(); drawTable(); drawFlips(); });
    $("budget").addEventListener("input", (ev) => { state.pos = Number(ev.target.value); update(); });
    $("budget-kind").addEventListener("change", (ev) => { state.kind = ev.target.value; update(); });
    $("allow-unstable").addEventListener("change", (ev) => { state.allowUnstable = ev.target.checked; update(); });
    const options = TARGETS.map((t) => '<option value="' + esc(t.name) + '">' + esc(t.name) + "</option>").join("");
    $("flip-a").innerHTML = options;
    $("flip-b").innerHTML = options;
    if (TARGETS.length > 1) $("flip-b").selectedIndex = 1;
    $("flip-a").addEventListener("change", drawFlips);
    $("flip-b").addEventListener("change", drawFlips);
    $("entries").tHead.rows[0].innerHTML = COLUMNS.map((c) => "<th>" + esc(c[1]) + "</th>").join("");
    $("entries").tHead.addEventListener("click", (ev) => {
      const i = Array.from(ev.target.parentNode.cells).indexOf(ev.target);
      if (i < 0) return;
      state.sortDir = state.sortCol === i ? -state.sortDir : 1;
      state.sortCol = i;
      drawTable();
    });
    update();
    drawTable();
    drawFlips();
    drawSearches();
    document.body.dataset.ready = "1";
  }

  init();
})();
