// mlcomp UI: plain JavaScript, no build step. Buttons post to the API with the page's CSRF
// token; plots are drawn with plotly.js from figures the server built; the log tail and the
// metric curves poll the API; pages reload when a status they show changes.
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
      setTimeout(() => window.location.reload(), 400);
    } catch (error) {
      flash(error.message, true);
      button.disabled = false;
    }
  });

  const plotConfig = {responsive: true, displaylogo: false};

  function drawPlot(element, figure) {
    // responsive plots take the container's size on a resize: give it the figure's height
    element.style.height = (figure.layout.height || 400) + "px";
    window.Plotly.react(element, figure.data, figure.layout, plotConfig);
    const clickUrl = element.dataset.clickUrl;
    if (clickUrl && !element.dataset.bound) {
      element.dataset.bound = "1";
      element.on("plotly_click", (data) => {
        const id = data.points[0] && data.points[0].customdata;
        if (id !== undefined) window.location = clickUrl + id;
      });
    }
  }

  document.querySelectorAll(".plot[data-figure]").forEach((el) => drawPlot(el, JSON.parse(el.dataset.figure)));

  async function loadMetrics(container) {
    const data = await getJSON(container.dataset.url);
    const seen = new Set();
    data.figures.forEach((f) => {
      const key = "metric-" + f.name + "-" + f.kind;
      seen.add(key);
      let el = container.querySelector('[data-key="' + CSS.escape(key) + '"]');
      if (!el) {
        el = document.createElement("div");
        el.className = "plot metric";
        el.dataset.key = key;
        container.appendChild(el);
      }
      drawPlot(el, f.figure);
    });
    container.querySelectorAll("p.empty").forEach((p) => p.remove());
  }

  const metrics = document.getElementById("metrics");
  if (metrics) {
    loadMetrics(metrics).catch((e) => flash(e.message, true));
    if (metrics.dataset.live === "1") setInterval(() => loadMetrics(metrics).catch(() => {}), 5000);
  }

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

  // What a page shows of the store's state: every status, count, attempt and progress value.
  function fingerprint(value, key, out) {
    if (["status", "counts", "attempt", "total"].includes(key)) {
      out.push(key + "=" + JSON.stringify(value));
    } else if (value && typeof value === "object") {
      Object.keys(value).forEach((k) => fingerprint(value[k], k, out));
    }
    return out;
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
      if (last !== null && current !== last) window.location.reload();
      last = current;
    };
    watch().catch(() => {});
    setInterval(() => watch().catch(() => {}), 3000);
  }
})();
