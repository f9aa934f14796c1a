// The report's timeline and log views, drawn from the JSON in #data. Text from the
// logs only ever goes into the page as textContent (never as markup).
"use strict";
(function () {
  const started = performance.now();
  const data = JSON.parse(document.getElementById("data").textContent);
  const ROW = 16;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const secs = (t) => t.toFixed(t < 10 ? 2 : 1) + " s";

  // The timeline: a lane for the test's own steps, then one per machine; steps that
  // overlap in a lane (a wait and its commands) go on rows under each other. Bars are
  // placed in percent of the run, so zooming only widens the lanes (`zoom` times the
  // box, scrolled sideways), and the axis gets more ticks.
  function timeline(zoom) {
    const box = document.getElementById("timeline");
    const end = Math.max(data.end, 0.001);
    const lanes = [];
    if (data.steps.some((s) => s.machine === null)) lanes.push(null);
    for (const m of data.machines) lanes.push(m.name);
    const tools = el("div", "tl-tools");
    const scroll = el("div", "tl-scroll");
    const inner = el("div", "tl-lanes");
    scroll.appendChild(inner);
    box.appendChild(tools);
    box.appendChild(scroll);
    const axis = el("div", "axis");
    const head = el("div", "lane");
    head.appendChild(el("div", "lane-name", ""));
    head.appendChild(axis);
    inner.appendChild(head);
    const failedList = document.getElementById("failed-steps");
    const minSpan = end * 0.006;
    let failing = null;
    for (const lane of lanes) {
      const row = el("div", "lane");
      row.dataset.lane = lane === null ? "(test)" : lane;
      row.appendChild(el("div", "lane-name", lane === null ? "test" : lane));
      const track = el("div", "lane-track");
      const rows = [];
      const steps = data.steps.filter((s) => s.machine === lane);
      steps.sort((a, b) => a.start - b.start);
      for (const s of steps) {
        const mark = s.end === null;
        const stop = Math.max(mark ? s.start : s.end, s.start + minSpan);
        let r = rows.findIndex((last) => last <= s.start);
        if (r < 0) { r = rows.length; rows.push(0); }
        rows[r] = stop;
        const cls = ["step", "kind-" + s.kind, s.outcome];
        if (mark) cls.push("mark");
        if (s.failing) cls.push("failing");
        const bar = el("div", cls.join(" "));
        bar.style.left = (100 * s.start / end) + "%";
        bar.style.top = (r * 20) + "px";
        if (!mark) bar.style.width = "max(3px, " + (100 * (s.end - s.start) / end) + "%)";
        const took = mark ? "at " + secs(s.start) : secs(s.end - s.start) + " from " + secs(s.start);
        let title = s.kind + ": " + s.label + " (" + took + ", " + s.outcome + ")";
        if (s.message) title += "\n" + s.message;
        bar.title = title;
        // The flag goes on the side with room, or inside a bar that fills the lane.
        if (s.failing) {
          failing = s;
          const left = s.start / end;
          const right = 1 - stop / end;
          const side = Math.max(left, right) < 0.1 ? "flag-in" : left > right ? "flag-left" : "flag-right";
          bar.appendChild(el("span", "flag " + side, "failing step"));
        }
        bar.appendChild(el("span", "label", s.label));
        track.appendChild(bar);
        if (s.outcome === "failed" || s.failing) {
          const li = el("li", s.failing ? "failing" : "");
          li.textContent = secs(s.start) + " " + (lane === null ? "test" : lane) + ": " +
            s.kind + " " + s.label + (s.message && s.message !== s.label ? ": " + s.message : "") +
            (s.failing ? " (failing step)" : "");
          failedList.appendChild(li);
        }
      }
      track.style.height = (Math.max(rows.length, 1) * 20) + "px";
      row.appendChild(track);
      inner.appendChild(row);
    }

    // Zoom: 1 (the whole run) to 256 times, keeping `at` (a time) where it was, or in
    // the middle of the view.
    const MAX = 256;
    let level = 1;
    const label = el("span", "tl-zoom");
    function setZoom(z, at) {
      z = Math.min(MAX, Math.max(1, z));
      const view = scroll.clientWidth || 1;
      const was = inner.offsetWidth || view;
      const keep = at === undefined ? (scroll.scrollLeft + view / 2) / was : at / end;
      level = z;
      box.dataset.zoom = String(z);
      inner.style.width = (100 * z) + "%";
      axis.textContent = "";
      const ticks = Math.min(4 * z, 400);
      for (let i = 0; i <= ticks; i++) {
        const tick = el("span", "tick", secs((end * i) / ticks));
        tick.style.left = (100 * i / ticks) + "%";
        if (i === ticks) tick.style.transform = "translateX(-100%)";
        axis.appendChild(tick);
      }
      label.textContent = z === 1 ? "whole run" : "×" + z;
      scroll.scrollLeft = Math.max(0, keep * inner.offsetWidth - view / 2);
    }
    function button(text, help, act) {
      const b = el("button", "", text);
      b.type = "button";
      b.title = help;
      b.addEventListener("click", act);
      tools.appendChild(b);
      return b;
    }
    button("−", "zoom out", () => setZoom(level / 2));
    button("+", "zoom in (or Ctrl + wheel over the timeline)", () => setZoom(level * 2));
    button("whole run", "the whole run in view", () => setZoom(1));
    if (failing) {
      button("failing step", "zoom to the failing step", () => {
        const took = Math.max((failing.end === null ? failing.start : failing.end) - failing.start, end / 1000);
        // The step a tenth of the view, at most.
        setZoom(Math.pow(2, Math.floor(Math.log2(Math.max(1, end / (10 * took))))), failing.start);
      });
    }
    tools.appendChild(label);
    scroll.addEventListener("wheel", (e) => {
      if (!e.ctrlKey) return;
      e.preventDefault();
      const rect = inner.getBoundingClientRect();
      const at = end * (e.clientX - rect.left) / Math.max(rect.width, 1);
      setZoom(e.deltaY < 0 ? level * 2 : level / 2, at);
    }, { passive: false });
    setZoom(Math.pow(2, Math.round(Math.log2(Math.max(1, Number(zoom) || 1)))));
  }

  // Every step as a table row, drawn when the table is opened.
  function stepTable() {
    const box = document.getElementById("steps");
    box.addEventListener("toggle", () => {
      if (!box.open || box.dataset.drawn) return;
      box.dataset.drawn = "1";
      const table = el("table");
      const head = el("tr");
      for (const h of ["start", "lane", "kind", "step", "took", "outcome"]) head.appendChild(el("th", "", h));
      table.appendChild(head);
      const steps = data.steps.slice().sort((a, b) => a.start - b.start);
      for (const s of steps) {
        const tr = el("tr", s.outcome + (s.failing ? " failing" : ""));
        const took = s.end === null ? "" : secs(s.end - s.start);
        const outcome = s.outcome + (s.message && s.message !== s.label ? ": " + s.message : "");
        for (const v of [secs(s.start), s.machine === null ? "test" : s.machine, s.kind, s.label, took, outcome]) {
          tr.appendChild(el("td", "", v));
        }
        table.appendChild(tr);
      }
      box.appendChild(table);
    });
  }

  // A machine's log view: console or QEMU lines, a filter, and only the rows in sight
  // drawn (a long log is tens of thousands of lines).
  function logView(box, machine, tab, query) {
    box.textContent = "";
    const bar = el("div", "logbar");
    const tabs = {};
    for (const name of ["console", "qemu"]) {
      const b = el("button", "tab", name + " (" + machine[name].length + ")");
      b.type = "button";
      b.addEventListener("click", () => show(name));
      tabs[name] = b;
      bar.appendChild(b);
    }
    const filter = el("input", "filter");
    filter.type = "search";
    filter.placeholder = "filter lines";
    bar.appendChild(filter);
    const count = el("span", "count");
    bar.appendChild(count);
    const view = el("div", "viewport");
    const spacer = el("div", "spacer");
    const rows = el("div", "rows");
    view.appendChild(spacer);
    view.appendChild(rows);
    box.appendChild(bar);
    box.appendChild(view);
    let lines = [];
    let shown = null;

    function draw() {
      const n = shown ? shown.length : lines.length;
      spacer.style.height = (n * ROW) + "px";
      const first = Math.floor(view.scrollTop / ROW);
      const many = Math.ceil((view.clientHeight || 400) / ROW) + 2;
      rows.textContent = "";
      for (let i = first; i < Math.min(n, first + many); i++) {
        const line = lines[shown ? shown[i] : i];
        const r = el("div", "row" + (line[0] === null ? " earlier" : ""));
        r.style.top = (i * ROW) + "px";
        r.appendChild(el("span", "t", line[0] === null ? "" : line[0].toFixed(3)));
        r.appendChild(el("span", "x", line[1]));
        rows.appendChild(r);
      }
    }
    function apply() {
      const q = filter.value.toLowerCase();
      shown = null;
      if (q) {
        shown = [];
        for (let i = 0; i < lines.length; i++) {
          if (lines[i][1].toLowerCase().includes(q)) shown.push(i);
        }
      }
      count.textContent = shown ? shown.length + " of " + lines.length + " lines" : lines.length + " lines";
      view.scrollTop = 0;
      draw();
    }
    function show(name) {
      lines = machine[name];
      for (const k in tabs) tabs[k].classList.toggle("on", k === name);
      apply();
    }
    let pending = 0;
    filter.addEventListener("input", () => {
      clearTimeout(pending);
      pending = setTimeout(apply, 120);
    });
    view.addEventListener("scroll", () => requestAnimationFrame(draw));
    filter.value = query || "";
    show(tab === "qemu" ? "qemu" : "console");
  }

  // Logs are drawn when their machine's section opens.
  function machines(wanted) {
    for (const m of data.machines) {
      const section = document.getElementById("m-" + m.name);
      if (!section) continue;
      const box = section.querySelector(".logview");
      const open = () => {
        if (!box.dataset.drawn) {
          box.dataset.drawn = "1";
          const q = wanted && wanted.m === m.name ? wanted : {};
          logView(box, m, q.tab, q.q);
        }
      };
      section.addEventListener("toggle", () => { if (section.open) open(); });
      if (wanted && wanted.m === m.name) section.open = true;
      if (section.open) open();
    }
  }

  // `#m=server&q=text&tab=qemu` opens a machine's log filtered; `zoom=8` zooms the
  // timeline in (a power of two).
  const wanted = {};
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    const [k, v] = part.split("=");
    if (k && v !== undefined) wanted[k] = decodeURIComponent(v);
  }
  timeline(wanted.zoom);
  stepTable();
  machines(wanted.m ? wanted : null);
  document.documentElement.dataset.rendered = (performance.now() - started).toFixed(0);
})();
