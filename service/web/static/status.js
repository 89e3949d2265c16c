/* recsys-search: the status page. Polls GET /status every 5 s (index version, spaces, recall,
 * build time, and this worker's recent request latency) and GET /health/ready. */
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const $ = (id) => document.getElementById(id);

  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") node.setAttribute("style", value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    return { ok: response.ok, status: response.status, body };
  }

  const fmtInt = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");
  const fmtMs = (ms) => (typeof ms !== "number" ? "–" : ms >= 100 ? `${Math.round(ms)} ms` : `${ms.toFixed(1)} ms`);
  function fmtSeconds(s) {
    if (typeof s !== "number") return "–";
    if (s < 60) return `${s.toFixed(1)} s`;
    return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  }
  function ago(date) {
    const s = Math.max(0, (Date.now() - date.getTime()) / 1000);
    if (s < 60) return "just now";
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} days ago`;
  }

  function renderStatus(st) {
    $("version").textContent = st.index_version || "none published";
    $("version-sub").textContent = st.refused && Object.keys(st.refused).length
      ? `refused: ${Object.keys(st.refused).join(", ")}` : "served by this worker";
    if (st.built_at) {
      const d = new Date(st.built_at);
      $("built").textContent = isNaN(d) ? st.built_at : ago(d);
      $("built-sub").textContent = isNaN(d) ? "" : d.toLocaleString();
    } else {
      $("built").textContent = "–";
      $("built-sub").textContent = "";
    }
    $("build-seconds").textContent = fmtSeconds(st.build_seconds);
    const spaces = Object.entries(st.spaces || {});
    $("vectors").textContent = fmtInt(spaces.reduce((a, [, sp]) => a + (sp.count || 0), 0));
    $("vectors-sub").textContent = spaces.length ? `${spaces.length} space${spaces.length === 1 ? "" : "s"}: ${spaces.map(([n]) => n).join(", ")}` : "";

    const warnings = [];
    for (const [name, why] of Object.entries(st.skipped_spaces || {})) warnings.push(`${name} space skipped: ${why}`);
    if (st.clip_error) warnings.push(`clip space not served: ${st.clip_error}`);
    for (const [name, why] of Object.entries(st.refused || {})) warnings.push(`version ${name} refused: ${why}`);
    $("space-warnings").replaceChildren(...warnings.map((w) => h("div", { class: "warn-box" }, w)));

    const tbody = $("spaces").tBodies[0];
    if (!spaces.length) {
      tbody.replaceChildren(h("tr", { class: "empty-row" }, h("td", { colspan: "7" },
        st.index_version ? "no spaces" : "No index is published yet: run `recsys-indexer build`.")));
    } else {
      tbody.replaceChildren(...spaces.map(([name, sp]) => {
        const recall = typeof sp.recall_at_10 === "number" ? sp.recall_at_10 : null;
        return h("tr", { dataset: { space: name } },
          h("td", null, h("b", null, name)),
          h("td", { class: "num" }, fmtInt(sp.count)),
          h("td", { class: "num" }, sp.dim),
          h("td", null, h("code", null, sp.index_key || "–")),
          h("td", null, recall === null ? "–" : h("div", { class: "recall", title: sp.recall_probes ? `measured on ${sp.recall_probes}` : "" },
            h("div", { class: "bar" }, h("span", { style: `width:${Math.round(recall * 100)}%` })),
            h("span", { class: "num" }, recall.toFixed(3)))),
          h("td", { class: "num" }, fmtInt(sp.fresh)),
          h("td", null, h("span", { class: "muted" }, sp.encoder || "–")));
      }));
    }

    renderModel(st.model);
    renderEncoder("encoder", st.encoder, st.spaces && st.spaces.text);
    // The CLIP panel shows only where a clip space is served.
    $("clip-encoder").hidden = !(st.spaces && st.spaces.clip);
    renderEncoder("clip-encoder", st.clip_encoder, st.spaces && st.spaces.clip);
    renderQueryEncoder(st.query_encoder);

    const lat = st.latency || {};
    $("latency-scope").textContent = `this worker (pid ${lat.worker_pid ?? "?"}), last ${fmtInt(lat.window)} requests per route; other gunicorn workers keep their own`;
    const routes = Object.entries(lat.routes || {}).filter(([r]) => !r.includes("/static/"))
      .sort((a, b) => b[1].count - a[1].count || a[0].localeCompare(b[0]));
    const lbody = $("latency").tBodies[0];
    if (!routes.length) {
      lbody.replaceChildren(h("tr", { class: "empty-row" }, h("td", { colspan: "7" }, "No requests yet on this worker.")));
      return;
    }
    const worst = Math.max(...routes.map(([, r]) => r.p95_ms || 0), 1);
    lbody.replaceChildren(...routes.map(([route, r]) => h("tr", { dataset: { route } },
      h("td", null, h("code", { title: route }, route.replace(/<(?:[a-z]+:)?([^>]+)>/g, "<$1>"))),
      h("td", { class: "num" }, fmtInt(r.count)),
      h("td", { class: "num" }, fmtMs(r.p50_ms)),
      h("td", { class: "num" }, fmtMs(r.p95_ms)),
      h("td", { class: "num" }, fmtMs(r.p99_ms)),
      h("td", null, h("div", { class: "bar lat" }, h("span", { style: `width:${Math.max(2, Math.round((r.p95_ms / worst) * 100))}%` }))),
      h("td", { class: "num" }, r.errors ? h("b", { style: "color:var(--danger)" }, r.errors) : "0"))));
  }

  function renderModel(model) {
    const mbody = $("model-metrics").tBodies[0];
    if (!model) {
      $("model-summary").textContent = "No model in this version (built before the training stage existed).";
      mbody.replaceChildren();
      return;
    }
    if (model.status !== "trained") {
      $("model-summary").textContent = `No model: ${model.reason || model.status}`;
      mbody.replaceChildren();
      return;
    }
    const gate = model.gate || {};
    const verdict = !gate.reference ? "no published model to compare with" :
      gate.forced ? "gate overridden (--force)" : gate.passed ? "passed the quality gate" : "refused by the quality gate";
    $("model-summary").replaceChildren(
      h("b", null, model.family), ` ${JSON.stringify(model.params)} · blend ${JSON.stringify(model.blend)} · `,
      model.profile && model.profile.way ? `content scored by ${model.profile.way} · ` : "",
      model.cold_place && Number.isInteger(model.cold_place.rank) ?
        `new items take the cold place from content rank ${model.cold_place.rank} · ` : "",
      `${fmtInt(model.interactions)} interactions up to event #${fmtInt(model.watermark_event_id)} · ${verdict}`,
      model.served ? "" : h("span", { class: "warn-box" }, " not served by this worker"));
    const names = { model: "with the model (served)", without_model: "without a model (co-engagement blend)",
      published_recipe: "the previously published model" };
    const rows = Object.entries(model.metrics || {});
    const fmt = (v) => (typeof v === "number" ? v.toFixed(4) : "–");
    mbody.replaceChildren(...rows.map(([name, m]) => h("tr", { dataset: { setting: name } },
      h("td", null, names[name] || name), h("td", { class: "num" }, fmt(m.ndcg)),
      h("td", { class: "num" }, fmt(m.recall)), h("td", { class: "num" }, fmt(m.coverage)))));
  }

  // One encoder panel: `id` is its element prefix ("encoder" for text, "clip-encoder"), `space` its space's row.
  function renderEncoder(id, encoder, space) {
    const body = $(`${id}-metrics`).tBodies[0];
    if (!encoder) {
      $(`${id}-summary`).textContent = `Pretrained ${space ? space.encoder : "encoder"}, as shipped (run recsys-indexer finetune to adapt it to this catalog).`;
      body.replaceChildren();
      return;
    }
    const gate = encoder.gate || {};
    const verdict = gate.forced ? "gate overridden (--force)" : gate.refused ? `refused by the gate: ${gate.refused}` : "passed the quality gate";
    const fit = encoder.fit || {};
    const mark = encoder.watermark || {};
    $(`${id}-summary`).replaceChildren(
      h("b", null, encoder.name), ` @${encoder.revision} · from ${(encoder.base || {}).name} · `,
      `${fmtInt(fit.train_pairs)} training pairs, ${fit.epochs_run ?? "?"} epochs in ${Math.round(fit.seconds || 0)} s (${fit.device || "?"}, ${fit.precision || "?"}) · `,
      `behaviour up to event #${fmtInt(mark.max_event_id)} · ${verdict}`,
      encoder.inherited_from ? ` · kept from ${encoder.inherited_from}` : "");
    const names = { content_ndcg_at_10: "content-only NDCG@10 (recent behaviour)",
      cold_recall_at_10: "cold-item Recall@10", search_mrr_at_10: "search MRR@10 (held-out clicks)" };
    const fmt = (v) => (typeof v === "number" ? v.toFixed(4) : "–");
    body.replaceChildren(...Object.entries(gate.comparison || {}).map(([name, row]) => h("tr", { dataset: { metric: name } },
      h("td", null, names[name] || name), h("td", { class: "num" }, fmt(row.published)),
      h("td", { class: "num" }, fmt(row.candidate)),
      h("td", { class: "num" }, `${row.diff >= 0 ? "+" : ""}${fmt(row.diff)} ± ${fmt(row.se)}`))));
  }

  function renderQueryEncoder(q) {
    const box = $("query-encoder");
    if (!q) {
      box.textContent = "";
      return;
    }
    const a = q.agreement || {};
    const fmt = (v, d) => (typeof v === "number" ? v.toFixed(d) : "–");
    const measured = q.exported && q.agreement
      ? ` · ${q.exported} export checked on ${fmtInt(a.probes)} query-like probes: min cosine ${fmt(a.min_cosine, 6)} to torch` +
        (typeof a.top10_agreement === "number" ? `, top-10 agreement ${fmt(a.top10_agreement, 3)}` : "") +
        `, ${fmt(a.onnx_ms_p50, 2)} ms per query against ${fmt(a.torch_ms_p50, 2)} ms`
      : "";
    box.replaceChildren("Queries encoded with ", h("b", { dataset: { serving: q.serving } }, q.serving),
      ` (query_backend ${q.configured})`, measured,
      q.reason ? h("span", { class: "warn-box" }, ` torch instead: ${q.reason}`) : "");
  }

  let timer = null;
  let paused = false;

  async function refresh() {
    clearTimeout(timer);
    try {
      const [status, ready] = await Promise.all([getJSON("/status"), getJSON("/health/ready")]);
      if (!status.ok) {
        const msg = status.body && status.body.error ? status.body.error.message : `status ${status.status}`;
        $("notice-text").textContent = `GET /status failed: ${msg}`;
        $("notice").hidden = false;
      } else {
        $("notice").hidden = true;
        renderStatus(status.body);
      }
      const pill = $("health");
      pill.hidden = false;
      if (ready.ok) {
        pill.textContent = "Ready";
        pill.className = "pill";
        pill.style.cssText = "background:var(--ok-soft);color:var(--ok)";
        pill.title = "database reachable and an index loaded";
      } else {
        const d = ready.body && ready.body.error && ready.body.error.details;
        pill.textContent = "Not ready";
        pill.className = "pill cold";
        pill.style.cssText = "";
        pill.title = d ? JSON.stringify(d) : "";
      }
      $("live-text").textContent = paused ? "Paused" : `Auto-refresh every 5 s · updated ${new Date().toLocaleTimeString()}`;
      document.body.dataset.loaded = "true";
    } catch (err) {
      $("notice-text").textContent = `The service did not answer: ${err.message}`;
      $("notice").hidden = false;
    }
    if (!paused) timer = setTimeout(refresh, REFRESH_MS);
  }

  $("live").addEventListener("click", () => {
    paused = !paused;
    $("live").classList.toggle("paused", paused);
    if (paused) { clearTimeout(timer); $("live-text").textContent = "Paused"; } else refresh();
  });
  document.addEventListener("visibilitychange", () => { if (!document.hidden && !paused) refresh(); });
  refresh();
})();
