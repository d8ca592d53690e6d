// The compare page (siamese/diagnostics/compare_page.py writes PAGE_DATA): per reference, each recipe's model
// minus the reference with its 95 % interval as an error bar; the training seconds; the table of figures.
(function () {
  "use strict";
  const D = window.PAGE_DATA;
  const own = D.rows.filter((r) => Object.keys(r.vs).length); // the recipes' models; the rest are references
  const label = (r) => r.recipe + " \u00b7 " + r.model;
  const fmt = (v, digits) => (v === null || v === undefined ? "" : Number(v).toFixed(digits === undefined ? 3 : digits));
  const signed = (v) => (v === null ? "" : (v >= 0 ? "+" : "") + fmt(v));
  const metricSelect = document.getElementById("metric");
  D.metrics.forEach((m) => metricSelect.append(new Option(m.replace(/_/g, " "), m)));
  document.getElementById("title").textContent = D.title;
  document.getElementById("note").textContent = own.length + " recipe model(s) against " + D.references.join(", ") +
    ": paired differences run by run, 95 % Student-t intervals; wins: runs ahead of the reference out of runs paired";

  function element(tag, text, attributes) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    Object.entries(attributes || {}).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  }
  function cell(d) { // "+0.012 [-0.004, +0.028] 3/5"
    if (!d) return "";
    const interval = d.low === null ? "" : " [" + signed(d.low) + ", " + signed(d.high) + "]";
    return signed(d.mean) + interval + " " + d.ahead + "/" + d.runs;
  }

  function differences(metric) {
    const y = own.map(label);
    const traces = D.references.map((reference, k) => {
      const vs = own.map((r) => (r.vs[reference] || {})[metric] || null);
      return { type: "scatter", mode: "markers", name: "minus " + reference, x: vs.map((d) => (d ? d.mean : null)), y,
        xaxis: "x" + (k ? k + 1 : ""), yaxis: "y" + (k ? k + 1 : ""), marker: { size: 9 },
        error_x: { type: "data", symmetric: false, array: vs.map((d) => (d && d.high !== null ? d.high - d.mean : 0)),
          arrayminus: vs.map((d) => (d && d.low !== null ? d.mean - d.low : 0)) },
        text: vs.map((d) => cell(d)), hovertemplate: "%{y}<br>%{text}<extra>minus " + reference + "</extra>" };
    });
    const layout = { grid: { rows: 1, columns: D.references.length, pattern: "independent" }, showlegend: false,
      height: 120 + 28 * own.length, margin: { l: 240, r: 20, t: 40, b: 40 },
      annotations: D.references.map((reference, k) => ({ text: metric.replace(/_/g, " ") + " minus " + reference,
        xref: "x" + (k ? k + 1 : "") + " domain", yref: "paper", x: 0.5, y: 1.08, showarrow: false })) };
    D.references.forEach((_, k) => {
      const axis = "xaxis" + (k ? k + 1 : "");
      layout[axis] = { zeroline: true, zerolinecolor: "#888", rangemode: "tozero", title: { text: "paired difference (95 % interval)" } };
      layout["yaxis" + (k ? k + 1 : "")] = { autorange: "reversed", showticklabels: k === 0 };
    });
    return Plotly.react("differences", traces, layout, { displaylogo: false, responsive: true });
  }

  function seconds() {
    const rows = D.rows.filter((r) => r.seconds !== null);
    return Plotly.react("seconds", [{ type: "bar", orientation: "h", y: rows.map(label), x: rows.map((r) => r.seconds),
      hovertemplate: "%{y}: %{x:.0f} s per run<extra></extra>" }],
    { margin: { l: 240, r: 20, t: 30, b: 40 }, title: { text: "training seconds per run", font: { size: 13 } },
      yaxis: { autorange: "reversed" } }, { displaylogo: false, responsive: true });
  }

  function table() {
    const head = element("tr");
    ["recipe", "model", "runs"].forEach((h) => head.append(element("th", h)));
    D.metrics.forEach((m) => {
      head.append(element("th", m.replace(/_/g, " ")));
      D.references.forEach((reference) => head.append(element("th", m.replace(/_/g, " ") + " minus " + reference)));
    });
    head.append(element("th", "train s"));
    document.getElementById("head").replaceChildren(head);
    document.getElementById("rows").replaceChildren(...D.rows.map((r) => {
      const tr = element("tr", undefined, { class: Object.keys(r.vs).length ? "recipe" : "reference" });
      [r.recipe, r.model, String(r.runs)].forEach((v) => tr.append(element("td", v)));
      D.metrics.forEach((m) => {
        tr.append(element("td", fmt(r.mean[m]) + (r.sd[m] === null ? "" : " \u00b1 " + fmt(r.sd[m]))));
        D.references.forEach((reference) => {
          const d = (r.vs[reference] || {})[m];
          const td = element("td", cell(d));
          if (d && d.low !== null && (d.low > 0 || d.high < 0)) td.className = d.low > 0 ? "ahead" : "behind";
          tr.append(td);
        });
      });
      tr.append(element("td", fmt(r.seconds, 0)));
      return tr;
    }));
  }

  metricSelect.addEventListener("change", () => differences(metricSelect.value));
  table();
  Promise.all([differences(D.metrics[0]), seconds()]).then(() => {
    performance.mark("page:drawn");
    document.body.dataset.ready = "true"; // for scripts (and tests) that wait for the first drawing
  });
})();
