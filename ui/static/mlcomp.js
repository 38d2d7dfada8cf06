// mlcomp UI: plain JavaScript, no build step. Buttons post to the API with the page's CSRF
// token; plots are drawn with plotly.js from figures the server built, redrawn in place with
// Plotly.react and a constant `uirevision`, so zoom, hidden series and the plot settings survive
// every live update; the log tail, the metric and resource curves poll the API; when a status
// the page shows changes, the page's live regions are swapped in place (no reload).
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function flash(message, isError) {
    const box = document.getElementById("flash");
    box.textContent = message;
    box.className = "flash" + (isError ? " error" : "");
    box.hidden = false;
  }

  async function getJSON(url) {
    const response = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json"},
      body: JSON.stringify(body || {}),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((data.error && data.error.message) || ("HTTP " + response.status));
    return data;
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.action");
    if (!button) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const data = await post(button.dataset.url, button.dataset.body ? JSON.parse(button.dataset.body) : {});
      flash(data.tasks.map((t) => "task " + t.id + " " + t.name + ": " + t.status).join("; "), false);
      await refreshRegions();
    } catch (error) {
      flash(error.message, true);
    }
    button.disabled = false;
  });

  // A DAG's tags and note: saved through the API, then the page's regions refreshed.
  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form.meta");
    if (!form) return;
    event.preventDefault();
    try {
      const data = await post(form.dataset.url, {tags: form.elements.tags.value, note: form.elements.note.value});
      flash("DAG " + data.id + ": saved", false);
    } catch (error) {
      flash(error.message, true);
    }
  });

  // -- plot settings (TensorBoard's scalar dashboard): smoothing, log axes -------------------
  const controls = document.getElementById("plot-controls");
  const settings = Object.assign({smoothing: 0, logx: false, logy: false, x: "step"},
                                 JSON.parse(localStorage.getItem("mlcomp-plot-settings") || "{}"));

  // TensorBoard's debiased exponential moving average: the weights of the points seen so far
  // are renormalised, so the first points are not pulled towards zero.
  function smooth(ys, weight) {
    let last = 0, count = 0;
    return ys.map((y) => {
      if (y === null || !isFinite(y)) return y;
      count += 1;
      last = last * weight + (1 - weight) * y;
      return last / (1 - Math.pow(weight, count));
    });
  }

  // The figure as drawn: each line smoothed with its raw values faint behind, the chosen axis types.
  function styled(figure, key) {
    const metric = figure.layout.meta === "metric";
    const data = [];
    figure.data.forEach((trace, i) => {
      const line = metric && trace.legendgroup !== undefined && trace.showlegend !== false;
      if (!line || !settings.smoothing) {
        data.push(metric ? Object.assign({uid: "s" + i}, trace) : trace);
        return;
      }
      // uids tie a trace's legend state to it whether smoothing adds the raw line or not
      data.push(Object.assign({}, trace, {uid: "r" + i, showlegend: false, hoverinfo: "skip",
                                          hovertemplate: undefined, opacity: 0.25, mode: "lines"}));
      data.push(Object.assign({}, trace, {uid: "s" + i, y: smooth(trace.y, settings.smoothing)}));
    });
    const layout = Object.assign({}, figure.layout, {uirevision: key});
    if (metric) {
      if (settings.logx) layout.xaxis = Object.assign({}, layout.xaxis, {dtick: undefined, tick0: undefined});
      // a wall-time axis stays a date axis; log x applies to steps and epochs
      // an axis's zoom is kept until its type changes
      const xtype = layout.xaxis.type === "date" ? "date" : settings.logx ? "log" : "linear";
      layout.xaxis = Object.assign({}, layout.xaxis, {type: xtype, uirevision: key + "/" + xtype});
      layout.yaxis = Object.assign({}, layout.yaxis, {type: settings.logy ? "log" : "linear",
                                                      uirevision: key + (settings.logy ? "/log" : "/linear")});
    }
    return {data: data, layout: layout};
  }

  const plotConfig = {responsive: true, displaylogo: false};

  function drawPlot(element, figure) {
    // responsive plots take the container's size on a resize: give it the figure's height
    element.style.height = (figure.layout.height || 400) + "px";
    element.figure = figure;  // as the server built it; styled() again when a setting changes
    const shown = styled(figure, element.dataset.key || element.id || "plot");
    window.Plotly.react(element, shown.data, shown.layout, plotConfig);
    const clickUrl = element.dataset.clickUrl;
    if (clickUrl && !element.dataset.bound) {
      element.dataset.bound = "1";
      element.on("plotly_click", (data) => {
        const id = data.points[0] && data.points[0].customdata;
        if (id !== undefined) window.location = clickUrl + id;
      });
    }
  }

  function drawStatic(root) {
    root.querySelectorAll(".plot[data-figure]").forEach((el) => drawPlot(el, JSON.parse(el.dataset.figure)));
  }
  drawStatic(document);

  if (controls) {
    const slider = controls.querySelector('[name="smoothing"]');
    const output = controls.querySelector("output");
    slider.value = settings.smoothing;
    output.textContent = Number(settings.smoothing).toFixed(2);
    controls.querySelector('[name="logx"]').checked = settings.logx;
    controls.querySelector('[name="logy"]').checked = settings.logy;
    const axis = controls.querySelector('[name="x"]');
    axis.value = controls.dataset.x || settings.x;
    controls.addEventListener("submit", (event) => event.preventDefault());
    controls.addEventListener("input", (event) => {
      if (event.target === axis) {  // other x values: curves fetched again, or the page drawn again
        settings.x = axis.value;
        localStorage.setItem("mlcomp-plot-settings", JSON.stringify(settings));
        if (controls.dataset.x) {
          const url = new URL(window.location.href);
          url.searchParams.set("x", axis.value);
          window.location = url;
        }
        document.querySelectorAll(".figures[data-axis]").forEach((c) => loadFigures(c).catch((e) => flash(e.message, true)));
        return;
      }
      settings.smoothing = Number(slider.value);
      settings.logx = controls.querySelector('[name="logx"]').checked;
      settings.logy = controls.querySelector('[name="logy"]').checked;
      output.textContent = settings.smoothing.toFixed(2);
      localStorage.setItem("mlcomp-plot-settings", JSON.stringify(settings));
      document.querySelectorAll(".plot").forEach((el) => { if (el.figure) drawPlot(el, el.figure); });
    });
  }

  // -- curves fetched from the API (metrics, resources), polled while the task runs ----------
  async function loadFigures(container) {
    const data = await getJSON(container.dataset.url + (container.dataset.axis ? "&x=" + settings.x : ""));
    data.figures.forEach((f) => {
      const key = container.id + "-" + f.name + "-" + f.kind;
      let el = container.querySelector('[data-key="' + CSS.escape(key) + '"]');
      if (!el) {
        el = document.createElement("div");
        el.className = "plot " + f.kind;
        el.dataset.key = key;
        container.appendChild(el);
      }
      drawPlot(el, f.figure);
    });
    if (data.scalars && data.scalars.length) showScalars(container, data.scalars);
    if (data.figures.length || (data.scalars && data.scalars.length)) container.querySelectorAll("p.empty").forEach((p) => p.remove());
  }

  // One-point series (test or infer results) as a table of values, before the curves.
  function showScalars(container, scalars) {
    let table = container.querySelector("table.scalars");
    if (!table) {
      table = document.createElement("table");
      table.className = "scalars";
      container.prepend(table);
    }
    table.replaceChildren();
    scalars.forEach((s) => {
      const row = table.insertRow();
      row.insertCell().textContent = s.name + " (" + s.label + ")";
      row.insertCell().textContent = s.value === null ? "–" : Number(s.value).toPrecision(5);
    });
  }

  document.querySelectorAll(".figures[data-url]").forEach((container) => {
    loadFigures(container).catch((e) => flash(e.message, true));
    const every = Number(container.dataset.every || 0);
    if (every) container.timer = setInterval(() => loadFigures(container).catch(() => {}), every * 1000);
  });

  const log = document.getElementById("log");
  async function pollLog() {
    const data = await getJSON(log.dataset.url + "?after=" + encodeURIComponent(log.dataset.last));
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    data.lines.forEach((line) => {
      const span = document.createElement("span");
      span.className = "line level-" + line.level + " stream-" + line.stream;
      span.textContent = line.text;  // text, never HTML
      log.appendChild(span);
      log.appendChild(document.createTextNode("\n"));
    });
    log.dataset.last = data.last;
    if (atBottom) log.scrollTop = log.scrollHeight;
    if (data.more) return pollLog();
  }
  if (log) {
    log.scrollTop = log.scrollHeight;
    if (log.dataset.live === "1") setInterval(() => pollLog().catch(() => {}), 2000);
  }

  // Sortable tables: a click on a header sorts by that column (numbers by data-value), again reverses.
  document.addEventListener("click", (event) => {
    const th = event.target.closest("table.sortable th");
    if (!th) return;
    const table = th.closest("table"), column = th.cellIndex, body = table.tBodies[0];
    const descending = th.dataset.sorted === "asc";
    table.querySelectorAll("th").forEach((h) => delete h.dataset.sorted);
    th.dataset.sorted = descending ? "desc" : "asc";
    const value = (row) => {
      const cell = row.cells[column];
      return th.dataset.type === "number" ? Number(cell.dataset.value) : cell.textContent.trim();
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = value(a), y = value(b);
      return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
    });
    body.append(...rows);
  });

  // -- live regions ----------------------------------------------------------------------------
  // What a page shows of the store's state: every status, count, attempt and checkpoint.
  function fingerprint(value, key, out) {
    if (["status", "counts", "attempt", "total", "checkpoints", "reason", "resume_from"].includes(key)) {
      out.push(key + "=" + JSON.stringify(value));
    } else if (value && typeof value === "object") {
      Object.keys(value).forEach((k) => fingerprint(value[k], k, out));
    }
    return out;
  }

  // Fetches the page again and swaps each [data-region] element for its new version; plots in
  // a region are redrawn with Plotly.react (their zoom kept).
  async function refreshRegions() {
    const response = await fetch(window.location.href, {credentials: "same-origin"});
    if (!response.ok) throw new Error(window.location.pathname + ": HTTP " + response.status);
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    document.querySelectorAll("[data-region]").forEach((old) => {
      const name = old.dataset.region;
      const next = fresh.querySelector('[data-region="' + CSS.escape(name) + '"]');
      if (!next) return;
      const plots = old.querySelectorAll(".plot[data-figure]");
      if (plots.length) {  // keep the plot elements, give them the new figures
        next.querySelectorAll(".plot[data-figure]").forEach((el, i) => plots[i] && drawPlot(plots[i], JSON.parse(el.dataset.figure)));
        return;
      }
      old.replaceChildren(...Array.from(next.childNodes).map((n) => document.importNode(n, true)));
    });
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return h ? h + "h " + m + "m" : m ? m + "m " + s + "s" : s + "s";
  }

  // The task's progress card: stage, epoch and batch with bars, and the ETA.
  function showProgress(card, progress) {
    card.replaceChildren();
    card.hidden = !progress;
    if (!progress) return;
    const row = (label, text, percent) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = label;
      dd.textContent = text + " ";
      if (percent !== undefined) {
        const bar = document.createElement("progress");
        bar.max = 100;
        bar.value = percent;
        dd.appendChild(bar);
      }
      card.append(dt, dd);
    };
    if (progress.stage) row("Stage", progress.stage);
    if (progress.epoch != null) row("Epoch", progress.epoch + (progress.epochs ? " / " + progress.epochs : ""), progress.epoch_percent);
    if (progress.batch != null) row("Batch", progress.batch + (progress.batches ? " / " + progress.batches : ""), progress.batch_percent);
    if (progress.eta != null) row("ETA", duration(progress.eta));
  }
  const progressCard = document.getElementById("progress");
  if (progressCard) showProgress(progressCard, JSON.parse(progressCard.dataset.progress));

  const main = document.querySelector("main[data-watch]");
  if (main) {
    let last = null;
    const watch = async () => {
      const data = await getJSON(main.dataset.watch);
      if (progressCard) showProgress(progressCard, data.progress);
      const current = fingerprint(data, "", []).join("|");
      if (last !== null && current !== last) await refreshRegions();
      last = current;
    };
    watch().catch(() => {});
    setInterval(() => watch().catch(() => {}), 3000);
  }
})();
