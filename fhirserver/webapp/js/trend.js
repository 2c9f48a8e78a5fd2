// A laboratory value over time: Chart.js (npm chart.js, vendor/chart.umd.js) with
// the reference range drawn as a band, and the same points as a table beside it for
// screen readers and for printing.
import { el, clear, table } from "./dom.js";
import { shortDate, quantity, value, when, range, conceptText } from "./fhir.js";
import { t } from "./i18n.js";

let current = null;

function bound(obs, side) {
  const r = (obs.referenceRange || [])[0];
  return r && r[side] && typeof r[side].value === "number" ? r[side].value : null;
}

/** Draw the Observations (one code) into ``box``; the points are the Observations
 * with a numeric value, oldest first. */
export function drawTrend(box, observations) {
  if (current) { current.destroy(); current = null; }
  clear(box);
  const points = observations
    .filter((o) => o.valueQuantity && typeof o.valueQuantity.value === "number" && when(o))
    .map((o) => ({ x: new Date(when(o)).getTime(), y: o.valueQuantity.value, obs: o }))
    .sort((a, b) => a.x - b.x);
  const name = observations.length ? conceptText(observations[0].code) : "";
  const unit = points.length ? points[0].obs.valueQuantity.unit || "" : "";
  const canvas = el("canvas", { role: "img", "aria-label": t("chartOf", { name }) });
  const frame = el("div", { class: "chart-frame" }, canvas);
  box.append(el("h3", {}, t("chartOf", { name })),
             el("p", { class: "points", dataset: { points: String(points.length) } },
                t("points", { n: points.length })),
             frame);
  const datasets = [];
  const lows = points.map((p) => ({ x: p.x, y: bound(p.obs, "low") }));
  const highs = points.map((p) => ({ x: p.x, y: bound(p.obs, "high") }));
  const hasRange = lows.some((p) => p.y !== null) || highs.some((p) => p.y !== null);
  if (hasRange) {
    datasets.push({ label: `${t("range")} ↓`, data: lows, borderColor: "rgba(46,125,50,.6)",
                    borderDash: [4, 4], pointRadius: 0, fill: false, spanGaps: true });
    datasets.push({ label: `${t("range")} ↑`, data: highs, borderColor: "rgba(46,125,50,.6)",
                    backgroundColor: "rgba(46,125,50,.12)", borderDash: [4, 4], pointRadius: 0,
                    fill: "-1", spanGaps: true });
  }
  datasets.unshift({ label: `${name}${unit ? ` (${unit})` : ""}`, data: points.map((p) => ({ x: p.x, y: p.y })),
                     borderColor: "#1565c0", backgroundColor: "#1565c0", pointRadius: 4, tension: 0 });
  canvas.dataset.points = String(points.length);
  canvas.dataset.range = hasRange ? "yes" : "no";
  current = new window.Chart(canvas, {
    type: "line",
    data: { datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: true,
      scales: {
        x: { type: "linear", ticks: { callback: (v) => shortDate(new Date(v).toISOString().slice(0, 10)),
                                       maxTicksLimit: 6 } },
        y: { title: { display: Boolean(unit), text: unit } },
      },
      plugins: { tooltip: { callbacks: { title: (items) => items.length
        ? shortDate(new Date(items[0].parsed.x).toISOString()) : "" } } },
    },
  });
  box.append(table([t("date"), t("value"), t("range")],
                   points.map((p) => [shortDate(when(p.obs)), value(p.obs) || quantity(p.obs.valueQuantity), range(p.obs)]),
                   "trend-table"));
}
