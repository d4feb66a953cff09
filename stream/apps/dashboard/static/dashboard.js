// The cryptosent dashboard: renders each `snapshot` server-sent event. Tweet texts and alert
// messages are untrusted input, so they only ever go through textContent, never innerHTML.
(function () {
  "use strict";

  const app = document.getElementById("app");
  const statusEl = document.getElementById("status");
  const chartEl = document.getElementById("chart");
  const assetEl = document.getElementById("asset");
  // The asset whose view is shown ("" = all assets): kept in the URL's ?asset= so a reload or a
  // shared link shows the same one.
  let selected = new URLSearchParams(location.search).get("asset") || "";
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function pct(v) {
    return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%";
  }

  function clock(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? "" : d.toISOString().slice(11, 19);
  }

  let chart = null;
  let bucketS = 5;
  function makeChart() {
    const grid = { stroke: color("--line"), width: 1 };
    const opts = {
      width: Math.max(320, chartEl.clientWidth),
      height: 300,
      scales: {
        // uPlot's automatic range for one point (or none) spans years; pad by buckets instead.
        x: {
          time: true,
          range: (u, min, max) => {
            if (min === null || max === null) {
              const now = Date.now() / 1000;
              return [now - 60 * bucketS, now];
            }
            const pad = min === max ? 10 * bucketS : bucketS;
            return [min - pad, max + pad];
          },
        },
        ratio: { range: [0, 1] },
        vol: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.15)] },
      },
      axes: [
        { stroke: color("--muted"), grid: grid, ticks: grid },
        {
          scale: "ratio", stroke: color("--muted"), grid: grid, ticks: grid, size: 56,
          values: (u, vals) => vals.map((v) => Math.round(v * 100) + "%"),
        },
        { scale: "vol", side: 1, stroke: color("--muted"), grid: { show: false }, ticks: grid },
      ],
      legend: { live: false },
      series: [
        {},
        {
          label: "volume (classified)", scale: "vol", width: 1,
          stroke: "rgba(96,165,250,0.9)", fill: "rgba(96,165,250,0.35)",
          paths: uPlot.paths.bars({ size: [0.7, 48] }), points: { show: false },
        },
        {
          label: "bullish ratio (rolling)", scale: "ratio", width: 2.5,
          stroke: color("--bull"), spanGaps: true, points: { show: true, size: 5 },
        },
        { label: "high", scale: "ratio", stroke: color("--warn"), dash: [6, 6], width: 1, points: { show: false } },
        { label: "low", scale: "ratio", stroke: color("--bear"), dash: [6, 6], width: 1, points: { show: false } },
      ],
    };
    return new uPlot(opts, [[], [], [], [], []], chartEl);
  }

  function renderChart(snap) {
    const s = snap.series;
    bucketS = snap.bucket_s;
    if (!chart) chart = makeChart();
    const n = s.t.length;
    const hi = new Array(n).fill(snap.thresholds.high);
    const lo = new Array(n).fill(snap.thresholds.low);
    chart.setData([s.t, s.volume, s.ratio, hi, lo]);
    document.getElementById("chart-hint").textContent =
      `${snap.bucket_s}s buckets, ratio over ${snap.rolling_s}s, by ${snap.time_axis} time (UTC)`;
    app.dataset.chartPoints = String(s.ratio.filter((v) => v !== null).length);
    let last = null;
    for (let i = n - 1; i >= 0; i--) if (s.ratio[i] !== null) { last = s.ratio[i]; break; }
    document.getElementById("ratio").textContent = pct(last);
  }

  function renderTweets(snap) {
    const body = document.getElementById("tweets");
    const rows = snap.tweets.map((t) => {
      const tr = el("tr", { "data-tweet-id": t.id, "data-label": t.label || "" });
      tr.appendChild(el("td", { class: "time" }, clock(snap.time_axis === "event" && t.event_time ? t.event_time : t.processed_time)));
      const label = el("td");
      label.appendChild(el("span", { class: "pill " + (t.label || "") }, t.label || "?"));
      tr.appendChild(label);
      const prob = el("td", { class: "prob" });
      const p = t.p_positive === null ? 0 : t.p_positive;
      prob.appendChild(el("span", { class: "bar", style: `width:${Math.round(p * 60)}px` }));
      prob.appendChild(document.createTextNode(p.toFixed(2)));
      tr.appendChild(prob);
      const text = t.text === null ? "(text not included)" : t.text;
      const cell = el("td", { class: "text", title: text });
      for (const a of t.assets || []) cell.appendChild(el("span", { class: "pill asset" }, a));
      cell.appendChild(document.createTextNode(text));
      tr.appendChild(cell);
      tr.dataset.assets = (t.assets || []).join(" ");
      return tr;
    });
    body.replaceChildren(...rows);
    document.getElementById("tweets-empty").hidden = rows.length > 0;
    app.dataset.tweets = String(rows.length);
  }

  function renderAlerts(snap) {
    const list = document.getElementById("alerts");
    const items = snap.alerts.map((a) => {
      const li = el("li", { "data-alert-id": a.alert_id, "data-kind": a.kind, "data-asset": a.asset || "" });
      const head = el("div");
      head.appendChild(el("span", { class: "pill asset" }, a.asset || "all assets"));
      head.appendChild(el("span", { class: "pill " + a.direction }, a.kind.replace("_", " ") + " " + a.direction));
      li.appendChild(head);
      li.appendChild(el("div", {}, a.message));
      li.appendChild(el("div", { class: "meta" }, `${a.window_s}s window from ${clock(a.window_start)} · id ${a.alert_id.slice(0, 8)}`));
      return li;
    });
    list.replaceChildren(...items);
    document.getElementById("alerts-empty").hidden = items.length > 0;
    app.dataset.alerts = String(items.length);
  }

  function renderAssets(snap) {
    // Rebuilt only when the list changes, so an open drop-down is not reset by every update.
    const names = snap.assets.map((a) => a.asset);
    if (selected && !names.includes(selected)) names.unshift(selected);
    const key = names.join(",");
    if (assetEl.dataset.names !== key) {
      const options = [el("option", { value: "" }, "All assets")];
      for (const name of names) options.push(el("option", { value: name }, name));
      assetEl.replaceChildren(...options);
      assetEl.dataset.names = key;
      assetEl.dataset.options = String(names.length);
    }
    assetEl.value = selected;
    for (const opt of assetEl.options) {
      const info = snap.assets.find((a) => a.asset === opt.value);
      if (info) opt.textContent = `${info.asset} (${info.classified.toLocaleString("en")}, ${pct(info.bullish_ratio)} bullish)`;
    }
    document.getElementById("chart-title").textContent = snap.asset || "All assets";
  }

  function render(snap) {
    if ((snap.asset || "") !== selected) return; // a late event of the previous selection
    const t = snap.totals;
    document.getElementById("ratio-all").textContent = pct(t.bullish_ratio);
    document.getElementById("classified").textContent = t.classified.toLocaleString("en");
    document.getElementById("skipped").textContent = t.skipped.toLocaleString("en");
    document.getElementById("alert-count").textContent = String(t.alerts);
    renderAssets(snap);
    renderChart(snap);
    renderTweets(snap);
    renderAlerts(snap);
    app.dataset.asset = snap.asset || "";
    app.dataset.records = String(t.records);
    app.dataset.classified = String(t.classified);
    app.dataset.version = String(snap.version);
  }

  function setStatus(connected) {
    statusEl.dataset.connected = String(connected);
    statusEl.textContent = connected ? "live" : "reconnecting…";
  }

  let source = null;
  function connect() {
    if (source) source.close();
    source = new EventSource(selected ? "/events?asset=" + encodeURIComponent(selected) : "/events");
    source.addEventListener("open", () => setStatus(true));
    source.addEventListener("error", () => setStatus(false));
    source.addEventListener("snapshot", (e) => {
      setStatus(true);
      render(JSON.parse(e.data));
    });
  }

  assetEl.addEventListener("change", () => {
    selected = assetEl.value;
    const url = new URL(location.href);
    if (selected) url.searchParams.set("asset", selected);
    else url.searchParams.delete("asset");
    history.replaceState(null, "", url);
    connect();
  });
  connect();

  window.addEventListener("resize", () => {
    if (chart) chart.setSize({ width: Math.max(320, chartEl.clientWidth), height: 300 });
  });
})();
