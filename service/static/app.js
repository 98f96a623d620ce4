"use strict";
/*
 * The attention viewer of attention-serve. It uses the public API only:
 *   GET  v1/models                                   models, versions, labels, and the attention each one gives
 *   POST v1/models/{name}[/versions/{v}]:predict     {"instances": [...], "parameters": {"attention": "all"}}
 * Attention and rollout are shaded on one sequential scale, ColorBrewer "Blues" (matplotlib's "Blues", which
 * `python -m service.picture` uses too), stretched from the smallest (or 0) to the largest weight shown.
 * "What changed the prediction" (occlusion: the predicted class's probability minus its probability without the
 * token) is signed, so it is shaded on a diverging scale, ColorBrewer "RdBu": blue pushed toward the predicted
 * class, red against it, white nothing, symmetric around 0 (the largest absolute value sets both ends).
 * By default tokens are shaded by rollout over the smallest-to-largest range: on the bundled model the pooling
 * weights of one text differ by a factor of only 1.2-2, so a 0-to-max scale paints every token nearly alike,
 * while rollout singles out the words that decide (exact weights are on hover and focus either way).
 */
(() => {
  const BLUES = ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"];
  const RDBU = ["#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7", "#d1e5f0", "#92c5de", "#4393c3", "#2166ac"];
  const rgbOf = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const RAMP = BLUES.map(rgbOf);
  const DIVERGING = RDBU.map(rgbOf);
  const SHADE_ORDER = ["rollout", "attention", "occlusion"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const view = { models: [], model: null, texts: [], rows: [], preferred: "rollout", shade: "rollout", stretch: true, heat: null };

  function shadeName(kind) {
    if (kind === "rollout") return "rollout";
    if (kind === "occlusion") return "what changed the prediction";
    const source = view.model?.attention?.source;
    return source === "received" ? "received attention" : source === "cls" ? "[CLS] attention" : "pooling attention";
  }

  // ---- colour scale ----

  function colour(t, ramp = RAMP) {
    const x = Math.min(Math.max(t, 0), 1) * (ramp.length - 1);
    const i = Math.min(Math.floor(x), ramp.length - 2);
    return ramp[i].map((c, k) => Math.round(c + (ramp[i + 1][k] - c) * (x - i)));
  }

  const css = (rgb) => `rgb(${rgb.join(" ")})`;

  function prefersLightText(rgb) {
    // WCAG relative luminance; white text where it contrasts more than black.
    const [r, g, b] = rgb.map((c) => (c / 255 <= 0.04045 ? c / 255 / 12.92 : ((c / 255 + 0.055) / 1.055) ** 2.4));
    const l = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    return 1.05 / (l + 0.05) > (l + 0.05) / 0.05;
  }

  function scaleFor(values, kind) {
    if (kind === "occlusion") {
      // Signed: symmetric around 0, so white means "changed nothing" whatever the range.
      const top = values.reduce((a, b) => Math.max(a, Math.abs(b)), 0) || 1;
      return { lo: -top, hi: top, diverging: true, at: (v) => 0.5 + v / (2 * top) };
    }
    const hi = values.reduce((a, b) => Math.max(a, b), -Infinity);
    const lo = view.stretch ? values.reduce((a, b) => Math.min(a, b), Infinity) : 0;
    return { lo, hi, at: (v) => (hi > lo ? (v - lo) / (hi - lo) : 1) };
  }

  const fmt = (w) => (w === 0 || Math.abs(w) >= 0.0005 ? w.toFixed(4) : w.toExponential(1));

  function legend(node, scale, label) {
    const [lo, hi] = [fmt(scale.lo), fmt(scale.hi)];
    if (scale.diverging) {
      const bar = el("span", "legend-bar diverging");
      node.replaceChildren(el("span", "legend-value", `${lo} against`), bar, el("span", "legend-value", `${hi} toward ${label}`));
      node.setAttribute("aria-label", `Colour scale: red against ${label} (${lo}), white no change, blue toward it (${hi})`);
    } else {
      node.replaceChildren(el("span", "legend-value", lo), el("span", "legend-bar"), el("span", "legend-value", hi));
      node.setAttribute("aria-label", `Colour scale: lightest ${fmt(scale.lo)}, darkest ${fmt(scale.hi)}`);
    }
    node.setAttribute("role", "img");
    return node;
  }

  // ---- DOM helpers ----

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgEl(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  function fillSelect(select, options) {
    const kept = select.value;
    select.replaceChildren(...options.map(([value, label, disabled]) => {
      const option = new Option(label, value);
      option.disabled = Boolean(disabled);
      return option;
    }));
    if (options.some(([value, , disabled]) => value === kept && !disabled)) select.value = kept;
  }

  const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
  const short = (text, n) => (Array.from(text).length > n ? `${Array.from(text).slice(0, n - 1).join("")}…` : text);

  // ---- talking to the service ----

  async function call(path, body) {
    const headers = { Accept: "application/json" };
    const key = $("api-key").value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;
    const init = body === undefined ? { headers }
      : { method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body) };
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new Error(`Could not reach the service (${error.message}).`);
    }
    const payload = await response.json().catch(() => null);
    if (!response.ok) {
      const reason = typeof payload?.error === "string" ? payload.error : response.statusText || "no details given";
      throw new Error(`The service answered ${response.status}: ${reason}`);
    }
    if (payload === null) throw new Error("The service answered with something that is not JSON.");
    return { payload, response };
  }

  function showError(error) {
    $("error").textContent = error.message;
    $("error").hidden = false;
  }

  async function loadModels() {
    try {
      const { payload } = await call("v1/models");
      view.models = payload.models;
      const idle = (m) => !m.serving.length;
      fillSelect($("model"), view.models.map((m) => [m.name, idle(m) ? `${m.name} (not serving)` : m.name, idle(m)]));
      const first = view.models.find((m) => m.serving.length);
      if (!first) throw new Error("The service has no model serving yet; try again in a moment.");
      $("model").value = first.name;
      $("model").disabled = false;
      fillVersions();
      $("submit").disabled = false;
    } catch (error) {
      showError(error);
    }
  }

  function fillVersions() {
    const model = view.models.find((m) => m.name === $("model").value);
    const serving = new Set(model.serving);
    const newest = Math.max(...model.serving.map(Number));
    const versions = [...model.versions].sort((a, b) => Number(b.version) - Number(a.version));
    fillSelect($("version"), [
      ["", `Newest serving (${newest})`],
      ...versions.map((v) => serving.has(v.version)
        ? [v.version, `Version ${v.version}`]
        : [v.version, `Version ${v.version} · ${v.state.toLowerCase()}`, true]),
    ]);
    $("version").disabled = false;
  }

  async function explain(event) {
    event.preventDefault();
    $("error").hidden = true;
    const texts = $("text").value.split(/\r?\n/).filter((line) => line.trim() !== "");
    if (!texts.length) {
      showError(new Error("Type some text first: one sequence per line."));
      $("text").focus();
      return;
    }
    const name = $("model").value;
    const version = $("version").value;
    const versioned = version ? `/versions/${encodeURIComponent(version)}` : "";
    const path = `v1/models/${encodeURIComponent(name)}${versioned}:predict`;
    const parameters = {
      attention: "all",
      ...($("truncate").checked ? { truncate: true } : {}),
      ...($("occlusion").checked ? { explain: "occlusion" } : {}),
    };
    $("submit").disabled = true;
    $("results").setAttribute("aria-busy", "true");
    try {
      const started = performance.now();
      const { payload, response } = await call(path, { instances: texts, parameters });
      const took = Math.round(performance.now() - started);
      view.texts = texts;
      view.rows = payload.predictions;
      view.model = view.models.find((m) => m.name === name) ?? null;
      const answered = response.headers.get("X-Model-Version") ?? "?";
      $("answered-by").textContent = `${name} · version ${answered} · ${took} ms`;
      render();
    } catch (error) {
      $("results").hidden = true;
      showError(error);
    } finally {
      $("submit").disabled = false;
      $("results").removeAttribute("aria-busy");
    }
  }

  // ---- sequences: label, probabilities, shaded tokens ----

  function render() {
    // Shade by what the user chose where the model gives it, else by what it gives; a model may give none.
    const given = SHADE_ORDER.filter((kind) => view.rows.every((row) => Array.isArray(row[kind])));
    view.shade = given.includes(view.preferred) ? view.preferred : given[0] ?? null;
    for (const input of document.querySelectorAll('input[name="shade"]')) {
      input.disabled = !given.includes(input.value);
      input.checked = input.value === view.shade;
    }
    const name = shadeName("attention");
    $("attention-name").textContent = name[0].toUpperCase() + name.slice(1);
    renderSequences();
    renderMatrixControls();
    $("results").hidden = false;
  }

  function renderSequences() {
    $("sequences").replaceChildren(...view.rows.map((row, i) => sequenceCard(row, view.texts[i], i)));
  }

  function sequenceCard(row, text, index) {
    const card = el("li", "card");
    const head = el("div", "card-head");
    const title = el("div", "card-title");
    title.append(el("h3", "", `Sequence ${index + 1}`), el("span", "badge", row.label));
    head.append(title, probabilities(row));
    const scale = view.shade ? scaleFor(row[view.shade], view.shade) : null;
    const foot = el("div", "card-foot");
    const shading = view.shade ? `shaded by ${shadeName(view.shade)}` : "this model returns no attention";
    foot.append(el("span", "muted", `${row.tokens.length} tokens · ${shading}`));
    if (scale) foot.append(legend(el("div", "legend"), scale, row.label));
    card.append(head, tokenText(row, text, index, scale), foot);
    if (row.truncated) {
      card.append(el("p", "note", "Truncated: the greyed text is past the model's maximum length and was not read."));
    }
    return card;
  }

  function probabilities(row) {
    const list = el("dl", "probs");
    for (const [label, p] of Object.entries(row.probabilities)) {
      const item = el("div", label === row.label ? "prob top" : "prob");
      const bar = el("span", "prob-bar");
      const fill = el("span", "prob-fill");
      fill.style.width = `${(p * 100).toFixed(1)}%`;
      bar.append(fill);
      const value = el("dd");
      value.append(bar, el("span", "prob-value", p.toFixed(3)));
      item.append(el("dt", "", label), value);
      list.append(item);
    }
    return list;
  }

  function tokenText(row, text, index, scale) {
    // Offsets count Unicode code points (Python's str), so index the text by code point, not UTF-16 unit.
    const chars = Array.from(text);
    const line = el("p", "tokens");
    line.setAttribute("role", "list");
    line.setAttribute("aria-label", `Sequence ${index + 1}` + (view.shade ? `, tokens shaded by ${shadeName(view.shade)}` : ""));
    let end = 0;
    row.tokens.forEach((token, i) => {
      const [start, stop] = row.offsets[i];
      if (start > end) line.append(chars.slice(end, start).join(""));
      const piece = chars.slice(Math.max(start, end), stop).join("") || token; // an empty span still shows its token
      line.append(tokenSpan(row, token, piece, i, scale));
      end = Math.max(end, stop);
    });
    if (end < chars.length) line.append(el("span", "cut", chars.slice(end).join("")));
    line.addEventListener("keydown", moveBetweenTokens);
    return line;
  }

  function tokenSpan(row, token, piece, i, scale) {
    const span = el("span", "token", piece);
    span.setAttribute("role", "listitem");
    span.tabIndex = i === 0 ? 0 : -1;
    Object.assign(span.dataset, { index: i, token });
    const parts = [];
    for (const kind of view.shade ? [view.shade, ...SHADE_ORDER.filter((k) => k !== view.shade)] : []) {
      if (!Array.isArray(row[kind])) continue;
      span.dataset[kind] = row[kind][i];
      parts.push(`${shadeName(kind)} ${fmt(row[kind][i])}`);
    }
    if (view.shade) {
      const weight = row[view.shade][i];
      const rgb = colour(scale.at(weight), scale.diverging ? DIVERGING : RAMP);
      if (prefersLightText(rgb)) span.classList.add("light");
      span.style.setProperty("--shade", css(rgb));
      span.dataset.weight = weight;
    }
    const tip = parts.length ? `“${token}”: ${parts.join(" · ")}` : `“${token}”`;
    span.dataset.tip = tip;
    span.setAttribute("aria-label", tip);
    return span;
  }

  function moveBetweenTokens(event) {
    const tokens = [...event.currentTarget.querySelectorAll(".token")];
    const at = tokens.indexOf(document.activeElement);
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tokens.length - 1 }[event.key];
    if (at < 0 || to === undefined || to < 0 || to >= tokens.length) return;
    event.preventDefault();
    tokens[at].tabIndex = -1;
    tokens[to].tabIndex = 0;
    tokens[to].focus();
  }

  // ---- self-attention heatmap ----

  function renderMatrixControls() {
    const withMatrix = view.rows.every((row) => Array.isArray(row.self_attention));
    $("matrix-missing").hidden = withMatrix;
    $("matrix-body").hidden = !withMatrix;
    if (!withMatrix) return;
    const [layers, heads] = [view.rows[0].self_attention.length, view.rows[0].self_attention[0].length];
    const named = view.model?.attention?.layers ?? [];
    const numbered = (n, word, names = []) => Array.from({ length: n }, (_, i) => [
      String(i), `${word} ${i + 1} of ${n}` + (names.length === n ? ` · ${short(names[i], 24)}` : ""),
    ]);
    fillSelect($("sequence"), view.texts.map((text, i) => [String(i), `${i + 1}: ${short(text, 40)}`]));
    $("sequence-field").hidden = view.rows.length < 2;
    fillSelect($("layer"), numbered(layers, "Layer", named));
    fillSelect($("head"), numbered(heads, "Head"));
    drawHeatmap();
  }

  function drawHeatmap() {
    const [s, layer, head] = ["sequence", "layer", "head"].map((id) => Number($(id).value));
    const row = view.rows[s];
    const matrix = row.self_attention[layer][head];
    const n = row.tokens.length;
    const scale = scaleFor(matrix.flat());
    legend($("matrix-legend"), scale);
    const cell = clamp(Math.floor(640 / n), 12, 32);
    const font = clamp(cell - 4, 10, 13);
    const labels = row.tokens.map((token) => short(token, 12));
    const margin = Math.ceil(Math.max(...labels.map((l) => l.length)) * font * 0.62) + 12;
    const size = margin + n * cell + 2;
    const svg = $("heatmap");
    svg.setAttribute("width", size);
    svg.setAttribute("height", size);
    svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
    svg.setAttribute("aria-label", `Self-attention of sequence ${s + 1}, layer ${layer + 1}, head ${head + 1}: `
      + `${n} by ${n} tokens, rows attend to columns. Arrow keys move between cells.`);
    const axis = svgEl("g", { class: "axis", "font-size": font });
    const cells = svgEl("g", { class: "cells" });
    labels.forEach((label, k) => {
      const mid = margin + k * cell + cell / 2;
      const left = svgEl("text", { x: margin - 6, y: mid, "text-anchor": "end", "dominant-baseline": "central" });
      const turned = `translate(${mid} ${margin - 6}) rotate(-90)`;
      const top = svgEl("text", { transform: turned, "dominant-baseline": "central" });
      left.textContent = label;
      top.textContent = label;
      axis.append(left, top);
    });
    matrix.forEach((weights, r) => weights.forEach((w, c) => {
      cells.append(svgEl("rect", {
        x: margin + c * cell, y: margin + r * cell, width: cell, height: cell,
        fill: css(colour(scale.at(w))), "data-row": r, "data-col": c, "data-weight": w,
      }));
    }));
    const frame = svgEl("rect", { class: "frame", x: margin, y: margin, width: n * cell, height: n * cell });
    const cursor = svgEl("rect", { class: "cursor", width: cell, height: cell, visibility: "hidden" });
    svg.replaceChildren(axis, cells, frame, cursor);
    view.heat = { tokens: row.tokens, matrix, n, cell, margin, cursor, at: null };
    $("cell-readout").textContent = "Point at a cell, or focus the heatmap and use the arrow keys.";
  }

  function pointAt(r, c) {
    const heat = view.heat;
    heat.at = [r, c];
    heat.cursor.setAttribute("x", heat.margin + c * heat.cell);
    heat.cursor.setAttribute("y", heat.margin + r * heat.cell);
    heat.cursor.setAttribute("visibility", "visible");
    $("cell-readout").textContent = `“${heat.tokens[r]}” (row ${r + 1}) attends to “${heat.tokens[c]}” `
      + `(column ${c + 1}): ${fmt(heat.matrix[r][c])}`;
  }

  function moveInHeatmap(event) {
    const heat = view.heat;
    if (!heat) return;
    const [r, c] = heat.at ?? [0, 0];
    const moves = {
      ArrowUp: [r - 1, c], ArrowDown: [r + 1, c], ArrowLeft: [r, c - 1], ArrowRight: [r, c + 1],
      Home: [r, 0], End: [r, heat.n - 1],
    };
    const to = moves[event.key];
    if (!to) return;
    event.preventDefault();
    pointAt(clamp(to[0], 0, heat.n - 1), clamp(to[1], 0, heat.n - 1));
  }

  // ---- wiring ----

  function onReady() {
    document.documentElement.style.setProperty("--ramp", `linear-gradient(to right, ${BLUES.join(", ")})`);
    document.documentElement.style.setProperty("--diverging", `linear-gradient(to right, ${RDBU.join(", ")})`);
    $("query").addEventListener("submit", explain);
    $("model").addEventListener("change", fillVersions);
    $("text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (!$("submit").disabled) $("query").requestSubmit();
      }
    });
    for (const input of document.querySelectorAll('input[name="shade"], input[name="scale"]')) {
      input.addEventListener("change", () => {
        view.preferred = document.querySelector('input[name="shade"]:checked')?.value ?? view.preferred;
        view.shade = view.preferred;
        view.stretch = document.querySelector('input[name="scale"]:checked').value === "stretch";
        renderSequences();
        if (view.heat && !$("matrix-body").hidden) drawHeatmap();
      });
    }
    for (const id of ["sequence", "layer", "head"]) $(id).addEventListener("change", drawHeatmap);
    const heatmap = $("heatmap");
    heatmap.addEventListener("keydown", moveInHeatmap);
    heatmap.addEventListener("focus", () => view.heat && !view.heat.at && pointAt(0, 0));
    heatmap.addEventListener("mouseover", (event) => {
      const { row, col } = event.target.dataset ?? {};
      if (row !== undefined) pointAt(Number(row), Number(col));
    });
    loadModels();
  }

  onReady();
})();
