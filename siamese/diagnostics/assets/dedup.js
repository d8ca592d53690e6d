// The dedup page (siamese/dedup/page.py writes PAGE_DATA): a histogram of every pair's distance and the closest
// pairs side by side; clicking a bar lists only that bar's pairs.
(function () {
  "use strict";
  const D = window.PAGE_DATA;
  const rows = document.getElementById("pairs");
  const straddling = document.getElementById("straddling");
  const groups = document.getElementById("groups");
  const G = D.group_noun; // a lesion (HAM10000) or a patient (ISIC 2020)
  document.getElementById("groups-label").textContent = " only pairs across " + G + "s";
  let bin = null; // the pairs of the clicked histogram bar, or null for all
  const all = D.distance.map((_, i) => i);

  document.getElementById("title").textContent = D.title;
  let note = D.total + " pair(s); the closest " + D.shown + " with their images";
  note += D.splits_known ? "; red rows straddle a split (a leak if both are used)" : "; no split known (dedup --splits MANIFEST)";
  document.getElementById("note").textContent = note;
  if (!D.splits_known) straddling.disabled = true;

  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([k, v]) => node.setAttribute(k, v));
    children.forEach((c) => node.append(c));
    return node;
  }
  function side(s, i) {
    const text = s.label[i] + (s.split[i] ? " \u00b7 " + s.split[i] : "") + (s.group[i] !== s.id[i] ? " \u00b7 " + G + " " + s.group[i] : "");
    return [element("td", {}, element("img", { src: s.thumb[i], alt: s.id[i] })),
      element("td", {}, element("div", { class: "id" }, s.id[i]), element("div", {}, text))];
  }
  function list() {
    const chosen = (bin || all).filter((i) => i < D.shown && (!straddling.checked || D.straddles[i])
      && (!groups.checked || !D.same_group[i]));
    rows.replaceChildren(...chosen.map((i) => {
      const facts = [D.method[i] + " distance " + (D.distance[i] === null ? "-" : D.distance[i].toFixed(3))];
      if (D.straddles[i]) facts.push("straddles " + D.a.split[i] + "/" + D.b.split[i]);
      facts.push(D.same_group[i] ? "same " + G : "different " + G + "s");
      return element("tr", { class: D.straddles[i] ? "straddles" : "" }, ...side(D.a, i), ...side(D.b, i),
        element("td", {}, facts.join(" \u00b7 ")));
    }));
    document.getElementById("shown").textContent = chosen.length + " listed" + (bin ? " (one bar; click it again for all)" : "");
  }
  straddling.addEventListener("change", list);
  groups.addEventListener("change", list);

  const traces = [false, true].map((s) => ({
    type: "histogram", x: all.filter((i) => D.straddles[i] === s).map((i) => D.distance[i]),
    name: s ? "across splits" : "within a split", marker: { color: s ? "#d62728" : "#6baed6" },
    customdata: all.filter((i) => D.straddles[i] === s),
  }));
  const layout = { barmode: "stack", margin: { l: 40, r: 10, t: 10, b: 40 }, xaxis: { title: { text: "distance" } },
    yaxis: { title: { text: "pairs" } }, legend: { orientation: "h" } };
  Plotly.newPlot("histogram", traces, layout, { displaylogo: false, responsive: true }).then((plot) => {
    plot.on("plotly_click", (ev) => {
      const picked = ev.points.flatMap((p) => p.pointNumbers.map((k) => traces[p.curveNumber].customdata[k]));
      bin = bin && bin.length === picked.length && bin.every((v, k) => v === picked[k]) ? null : picked.sort((x, y) => x - y);
      list();
    });
    list();
    performance.mark("page:drawn");
    document.body.dataset.ready = "true";
  });
})();
