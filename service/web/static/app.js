/* recsys-search: the search page. Plain JS, no build step; it calls the public JSON API.
 *
 *   GET  /suggest?q=&k=8             typeahead (debounced 120 ms, stale answers dropped)
 *   GET  /search?q=&k=24&kind=&category=&cursor=
 *   POST /search  multipart image=    search by picture (file picker or drop anywhere)
 *   POST /search  {"item_id", "k"}    more like this
 *   GET  /items/<id>                  item detail (side panel)
 *   GET  /users?k=20                  demo user picker
 *   GET  /users/<id>/recommendations  "recommended for you" row
 *   POST /events {"type": "click"}    a click on a result (with its search query); the row is refreshed after it
 *   GET  /ui/facets                   kinds and categories for the filters
 */
"use strict";

(() => {
  const PAGE_SIZE = 24;
  const SUGGEST_DELAY_MS = 120;
  const REC_COUNT = 12;
  const UNAVAILABLE = new Set([404, 501, 503]);

  // ---------- small helpers ---------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  /** Build an element: h("div", {class: "x", dataset: {id: 1}, onclick}, child, "text"). */
  function h(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "html") node.innerHTML = value; // constant markup (icons) only
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  /** fetch + JSON; API errors ({"error": {code, message, details}}) become ApiError. */
  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: { Accept: "application/json", ...(options.headers || {}) } });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, "network", `The service did not answer (${err.message}).`);
    }
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = null; }
    if (!response.ok) {
      const e = body && body.error;
      throw new ApiError(response.status, (e && e.code) || `http_${response.status}`,
        (e && e.message) || `${response.status} ${response.statusText || "error"}`, e && e.details);
    }
    return body;
  }

  const ICONS = {
    product: '<svg width="34" height="34" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.7" stroke-linecap="round" stroke-linejoin="round"><path d="M5.5 7.5h13l-1.1 12.2a1.5 1.5 0 0 1-1.5 1.3H8.1a1.5 1.5 0 0 1-1.5-1.3z"/><path d="M9 10V7a3 3 0 0 1 6 0v3"/></svg>',
    article: '<svg width="34" height="34" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.7" stroke-linecap="round" stroke-linejoin="round"><path d="M7 3h7l4 4v13a1 1 0 0 1-1 1H7a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1z"/><path d="M14 3v4h4M9.5 12h5M9.5 16h5"/></svg>',
    image: '<svg width="34" height="34" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="1.7" stroke-linecap="round" stroke-linejoin="round"><rect x="3" y="4.5" width="18" height="15" rx="2"/><circle cx="9" cy="10" r="1.8"/><path d="m21 16-5-5-9 8.5"/></svg>',
    search: '<svg width="16" height="16" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2.2" stroke-linecap="round"><circle cx="11" cy="11" r="7"/><path d="m20 20-3.5-3.5"/></svg>',
  };
  const KIND_LABEL = { product: "Product", article: "Article", image: "Image" };
  const SIGNAL_LABEL = {
    semantic: ["semantic", "found by meaning (embedding similarity)"],
    keyword: ["keyword", "found by words (full-text match)"],
    fresh: ["fresh", "written after the last index build"],
    profile: ["your taste", "close to what this user engaged with"],
    co_engagement: ["also engaged", "people who engaged with the same items engaged with this"],
    trending: ["trending", "popular right now"],
    new: ["new", "new in the catalog"],
  };
  /** Reasons come as {signal, text, item_id} objects (or plain strings). */
  const reasonText = (r) => (typeof r === "string" ? r : (r && r.text) || "");

  function kindTag(kind) {
    return h("span", { class: `kind-tag kind-${kind}` }, KIND_LABEL[kind] || kind);
  }

  function signalBadges(signals) {
    return h("span", { class: "signals" }, (signals || []).map((s) => {
      const [label, title] = SIGNAL_LABEL[s] || [s.replace(/_/g, " "), s];
      return h("span", { class: `badge ${SIGNAL_LABEL[s] ? `sig-${s}` : "sig-other"}`, title, dataset: { signal: s } }, label);
    }));
  }

  /** A thumbnail: the item's image, or a placeholder with its kind (also when the image fails). */
  function thumb(item, extraClass = "") {
    const box = h("div", { class: `thumb ${extraClass}` });
    const placeholder = () => h("div", { class: `placeholder kind-${item.kind}`, "aria-hidden": "true" },
      h("span", { html: ICONS[item.kind] || ICONS.product }),
      KIND_LABEL[item.kind] || item.kind,
      item.category ? h("span", { class: "ph-cat" }, item.category.replace(/-/g, " ")) : null);
    if (item.image_url) {
      const img = h("img", { src: item.image_url, alt: item.title, decoding: "async" });
      img.addEventListener("error", () => img.replaceWith(placeholder()), { once: true });
      box.append(img);
    } else {
      box.append(placeholder());
    }
    return box;
  }

  function facts(item) {
    const a = item.attributes || {};
    const out = [];
    if (typeof a.price === "number") out.push(h("span", { class: "price" }, `$${a.price.toFixed(2)}`));
    if (typeof a.rating === "number") out.push(h("span", { class: "stars", title: `rated ${a.rating} of 5` }, `★ ${a.rating.toFixed(1)}`));
    if (a.brand) out.push(h("span", { class: "who" }, a.brand));
    if (typeof a.reading_minutes === "number") out.push(h("span", null, `${a.reading_minutes} min read`));
    if (a.author) out.push(h("span", { class: "who" }, a.author));
    return out.length ? h("div", { class: "facts" }, out) : null;
  }

  let toastTimer = null;
  function toast(message) {
    const t = $("toast");
    t.textContent = message;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 2600);
  }

  function showNotice(message) {
    $("notice-text").textContent = message;
    $("notice").hidden = false;
  }
  function clearNotice() { $("notice").hidden = true; }
  $("notice").querySelector(".notice-close").addEventListener("click", clearNotice);

  // ---------- state ---------------------------------------------------------------------------
  const state = {
    kind: "",
    category: "",
    query: null, // {type: "text", q} | {type: "image", file, url} | {type: "similar", id, title}
    nextCursor: null,
    shown: 0,
    searchSeq: 0,
    facets: null,
    user: null,
    usersApi: null, // true when GET /users answered
    recs: null,
    recsSeq: 0,
  };

  const input = $("q");
  const list = $("suggestions");
  const results = $("results");

  // ---------- typeahead ---------------------------------------------------------------------
  const suggest = { timer: null, controller: null, seq: 0, items: [], active: -1 };

  function closeSuggestions() {
    list.hidden = true;
    list.replaceChildren();
    suggest.items = [];
    suggest.active = -1;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  /** The title with the part that matches the typed prefix in bold (at the start of a word). */
  function highlighted(title, typed) {
    const needle = typed.trim().toLowerCase();
    if (!needle) return [title];
    const lower = title.toLowerCase();
    let at = -1;
    for (let i = lower.indexOf(needle); i !== -1; i = lower.indexOf(needle, i + 1)) {
      if (i === 0 || /[\s\-/(]/.test(lower[i - 1])) { at = i; break; }
    }
    if (at < 0) return [title];
    return [title.slice(0, at), h("mark", null, title.slice(at, at + needle.length)), title.slice(at + needle.length)];
  }

  function renderSuggestions(items, typed) {
    suggest.items = items;
    suggest.active = -1;
    if (!items.length) { closeSuggestions(); return; }
    list.replaceChildren(...items.map((s, i) => h("li", {
      id: `suggestion-${i}`, class: "suggestion", role: "option", "aria-selected": "false",
      dataset: { id: s.id, index: i },
      onmousedown: (e) => { e.preventDefault(); pickSuggestion(i); },
      onmousemove: () => setActive(i, false),
    },
    h("span", { class: "s-icon", html: ICONS.search }),
    h("span", { class: "s-title" }, highlighted(s.title, typed)),
    h("span", { class: "s-meta" }, [KIND_LABEL[s.kind] || s.kind, s.category].filter(Boolean).join(" · ")))),
    h("li", { class: "suggestions-foot", role: "presentation" }, "↑ ↓ to move · Enter to pick · Esc to close"));
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
  }

  function setActive(i, scroll = true) {
    const nodes = list.querySelectorAll(".suggestion");
    nodes.forEach((n, j) => {
      n.classList.toggle("active", j === i);
      n.setAttribute("aria-selected", j === i ? "true" : "false");
    });
    suggest.active = i;
    if (i >= 0 && nodes[i]) {
      input.setAttribute("aria-activedescendant", nodes[i].id);
      if (scroll) nodes[i].scrollIntoView({ block: "nearest" });
    } else {
      input.removeAttribute("aria-activedescendant");
    }
  }

  async function fetchSuggestions(typed) {
    if (suggest.controller) suggest.controller.abort();
    suggest.controller = new AbortController();
    const seq = ++suggest.seq;
    const params = new URLSearchParams({ q: typed, k: "8" });
    if (state.kind) params.set("kind", state.kind);
    try {
      const body = await api(`/suggest?${params}`, { signal: suggest.controller.signal });
      if (seq !== suggest.seq || input.value !== typed || document.activeElement !== input) return;
      renderSuggestions(body.suggestions || [], typed);
    } catch (err) {
      if (err.name !== "AbortError" && seq === suggest.seq) closeSuggestions();
    }
  }

  function pickSuggestion(i) {
    const s = suggest.items[i];
    if (!s) return;
    input.value = s.title;
    closeSuggestions();
    runSearch({ type: "text", q: s.title }, { picked: s.id });
  }

  input.addEventListener("input", () => {
    clearTimeout(suggest.timer);
    const typed = input.value;
    if (!typed.trim()) {
      suggest.seq++;
      closeSuggestions();
      return;
    }
    suggest.timer = setTimeout(() => fetchSuggestions(typed), SUGGEST_DELAY_MS);
  });

  input.addEventListener("keydown", (e) => {
    const open = !list.hidden && suggest.items.length > 0;
    const n = suggest.items.length;
    if (e.key === "ArrowDown") {
      if (!open) { if (input.value.trim()) fetchSuggestions(input.value); return; }
      e.preventDefault();
      setActive(suggest.active + 1 >= n ? 0 : suggest.active + 1);
    } else if (e.key === "ArrowUp") {
      if (!open) return;
      e.preventDefault();
      setActive(suggest.active <= 0 ? n - 1 : suggest.active - 1);
    } else if (e.key === "Enter") {
      if (open && suggest.active >= 0) {
        e.preventDefault();
        pickSuggestion(suggest.active);
      }
    } else if (e.key === "Escape") {
      if (open) { e.preventDefault(); closeSuggestions(); suggest.seq++; }
    } else if (e.key === "Tab") {
      closeSuggestions();
    }
  });
  input.addEventListener("blur", () => setTimeout(closeSuggestions, 100));

  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(suggest.timer);
    suggest.seq++;
    closeSuggestions();
    const q = input.value.trim();
    if (q) runSearch({ type: "text", q });
  });

  // "/" focuses the search bar from anywhere (except while typing elsewhere).
  document.addEventListener("keydown", (e) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName);
    if (e.key === "/" && !typing && !e.metaKey && !e.ctrlKey) {
      e.preventDefault();
      input.focus();
      input.select();
    } else if (e.key === "Escape" && !$("panel").hidden) {
      closePanel();
    }
  });

  // ---------- filters -------------------------------------------------------------------------
  const kindButtons = [...$("kind-filter").querySelectorAll("button")];

  function renderKindButtons() {
    for (const b of kindButtons) {
      b.setAttribute("aria-checked", b.dataset.kind === state.kind ? "true" : "false");
      const counts = state.facets && state.facets.counts && state.facets.counts.kinds;
      const n = b.dataset.kind ? counts && counts[b.dataset.kind] : counts && Object.values(counts).reduce((a, x) => a + x, 0);
      let c = b.querySelector(".count");
      if (n !== undefined && n !== null) {
        if (!c) { c = h("span", { class: "count" }); b.append(c); }
        c.textContent = n;
      }
    }
  }

  function renderCategories() {
    const select = $("category");
    const facets = state.facets;
    let cats = {};
    if (facets) cats = state.kind ? (facets.by_kind[state.kind] || {}) : facets.counts.categories;
    if (state.category && !(state.category in cats)) {
      if (facets) state.category = "";
      else cats = { [state.category]: null };
    }
    select.replaceChildren(h("option", { value: "" }, "All categories"),
      ...Object.entries(cats).map(([name, n]) => h("option", { value: name }, n === null ? name : `${name.replace(/-/g, " ")} (${n})`)));
    select.value = state.category;
  }

  kindButtons.forEach((b) => b.addEventListener("click", () => {
    if (state.kind === b.dataset.kind) return;
    state.kind = b.dataset.kind;
    renderKindButtons();
    renderCategories();
    filtersChanged();
  }));
  $("category").addEventListener("change", (e) => {
    state.category = e.target.value;
    filtersChanged();
  });

  function filtersChanged() {
    syncUrl(false);
    if (state.query) runSearch(state.query, { push: false });
  }

  async function loadFacets() {
    try {
      state.facets = await api("/ui/facets");
    } catch (err) {
      state.facets = null;
    }
    renderKindButtons();
    renderCategories();
  }

  // ---------- URL state (reload and back keep the search) -------------------------------------
  function syncUrl(push) {
    const p = new URLSearchParams();
    const q = state.query;
    if (q && q.type === "text") p.set("q", q.q);
    if (q && q.type === "similar") p.set("like", q.id);
    if (state.kind) p.set("kind", state.kind);
    if (state.category) p.set("category", state.category);
    const url = `${location.pathname}${p.toString() ? `?${p}` : ""}`;
    if (url === `${location.pathname}${location.search}`) return;
    (push ? history.pushState : history.replaceState).call(history, null, "", url);
  }

  function restoreFromUrl() {
    const p = new URLSearchParams(location.search);
    state.kind = ["product", "article", "image"].includes(p.get("kind")) ? p.get("kind") : "";
    state.category = p.get("category") || "";
    renderKindButtons();
    renderCategories();
    if (p.get("q")) {
      input.value = p.get("q");
      runSearch({ type: "text", q: p.get("q") }, { push: false });
    } else if (p.get("like")) {
      runSearch({ type: "similar", id: p.get("like"), title: p.get("like") }, { push: false });
    } else {
      input.value = "";
      resetResults();
    }
  }
  window.addEventListener("popstate", restoreFromUrl);

  // ---------- search --------------------------------------------------------------------------
  function resetResults() {
    state.query = null;
    state.searchSeq++;
    results.replaceChildren();
    $("more").hidden = true;
    $("result-meta").textContent = "";
    $("query-chip").hidden = true;
    $("empty-title").textContent = "What are you looking for?";
    $("empty-text").textContent = "Search the catalog by meaning, not just words: describe what you need, or drop a picture anywhere on the page.";
    $("examples").hidden = false;
    $("empty").hidden = false;
    document.title = "Search · recsys-search";
  }

  function skeletons() {
    results.replaceChildren(...Array.from({ length: 8 }, () => h("div", { class: "card skeleton-card", "aria-hidden": "true" },
      h("div", { class: "thumb skeleton" }),
      h("div", { class: "card-body" }, h("div", { class: "skeleton skeleton-line", style: "width:40%" }),
        h("div", { class: "skeleton skeleton-line", style: "width:90%" }), h("div", { class: "skeleton skeleton-line", style: "width:70%" })))));
  }

  function renderQueryChip(query) {
    const chip = $("query-chip");
    const img = $("query-chip-img");
    if (query.type === "image") {
      img.src = query.url;
      img.hidden = false;
      $("query-chip-text").textContent = `Searching by picture: ${query.file.name || "image"}`;
    } else if (query.type === "similar") {
      img.hidden = true;
      $("query-chip-text").textContent = `More like: ${query.title}`;
    } else {
      chip.hidden = true;
      return;
    }
    chip.hidden = false;
  }
  $("query-chip-clear").addEventListener("click", () => {
    resetResults();
    syncUrl(true);
    input.focus();
  });

  /** Run (or continue, with ``append``) a search and render it. */
  async function runSearch(query, { append = false, push = true, picked = null } = {}) {
    const seq = ++state.searchSeq;
    if (!append) {
      state.query = query;
      state.nextCursor = null;
      state.shown = 0;
      renderQueryChip(query);
      $("empty").hidden = true;
      $("more").hidden = true;
      if (!results.querySelector(".card:not(.skeleton-card)")) skeletons();
      results.classList.add("loading");
      syncUrl(push);
      if (query.type === "text") document.title = `${query.q} · Search`;
    }
    const cursor = append ? state.nextCursor : null;
    let body;
    try {
      if (query.type === "text") {
        const p = new URLSearchParams({ q: query.q, k: String(PAGE_SIZE) });
        if (state.kind) p.set("kind", state.kind);
        if (state.category) p.set("category", state.category);
        if (cursor) p.set("cursor", cursor);
        body = await api(`/search?${p}`);
      } else if (query.type === "image") {
        const form = new FormData();
        form.append("image", query.file, query.file.name || "image");
        form.append("k", String(PAGE_SIZE));
        if (state.kind) form.append("kind", state.kind);
        if (state.category) form.append("category", state.category);
        if (cursor) form.append("cursor", cursor);
        body = await api("/search", { method: "POST", body: form });
      } else {
        const payload = { item_id: query.id, k: PAGE_SIZE };
        if (state.kind) payload.kind = [state.kind];
        if (state.category) payload.category = state.category;
        if (cursor) payload.cursor = cursor;
        body = await api("/search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
      }
    } catch (err) {
      if (seq !== state.searchSeq) return;
      results.classList.remove("loading");
      if (!append) {
        results.replaceChildren();
        $("result-meta").textContent = "";
        $("empty-title").textContent = "The search did not work";
        $("empty-text").textContent = err.message;
        $("examples").hidden = true;
        $("empty").hidden = false;
      }
      showNotice(err.message);
      return;
    }
    if (seq !== state.searchSeq) return;
    clearNotice();
    results.classList.remove("loading");
    const hits = body.hits || [];
    const cards = hits.map((hit, i) => resultCard(hit, state.shown + i, picked));
    if (append) results.append(...cards); else results.replaceChildren(...cards);
    state.shown += hits.length;
    state.nextCursor = body.next_cursor;
    $("more").hidden = !body.next_cursor;
    renderMeta(query, body);
    if (!append && !hits.length) {
      const filtered = state.kind || state.category;
      $("empty-title").textContent = "No results";
      $("empty-text").textContent = filtered
        ? "Nothing matches with these filters. Try another kind or all categories."
        : "Nothing matches yet. Try other words, or search by picture.";
      $("examples").hidden = true;
      $("empty").hidden = false;
    }
    if (query.type === "similar" && body.hits && query.title === query.id) {
      // Restored from the URL: fetch the title for the chip.
      api(`/items/${encodeURIComponent(query.id)}`).then((item) => { query.title = item.title; renderQueryChip(query); }).catch(() => {});
    }
  }

  function renderMeta(query, body) {
    const meta = $("result-meta");
    const n = state.shown;
    const what = query.type === "text" ? ["for ", h("b", null, `“${query.q}”`)]
      : query.type === "image" ? ["by picture"] : ["like ", h("b", null, query.title)];
    meta.replaceChildren(h("b", null, `${n}${body.next_cursor ? "+" : ""}`), ` result${n === 1 ? "" : "s"} `, ...what,
      h("span", { class: "muted" }, ` · ${body.mode} · ${Math.round(body.took_ms)} ms`));
    meta.title = `index version ${body.index_version}, space ${body.space}`;
  }

  function resultCard(hit, index, picked) {
    const card = h("article", {
      class: `card${picked && picked === hit.id ? " picked" : ""}`, tabindex: "0",
      dataset: { id: hit.id, kind: hit.kind, category: hit.category || "", title: hit.title, signals: (hit.signals || []).join(",") },
      "aria-label": hit.title,
      onclick: () => openItem(hit, { source: "search" }),
      onkeydown: (e) => { if (e.key === "Enter" && e.target === card) openItem(hit, { source: "search" }); },
    },
    thumb(hit),
    h("div", { class: "card-body" },
      h("div", { class: "eyebrow" }, kindTag(hit.kind), hit.category ? h("span", { class: "cat" }, hit.category.replace(/-/g, " ")) : null),
      h("h3", null, hit.title),
      facts(hit) || (hit.text ? h("p", { class: "snippet" }, hit.text) : null),
      h("div", { class: "card-foot" },
        signalBadges(hit.signals),
        typeof hit.score === "number" ? h("span", { class: "score", title: `score (${index + 1}. result)` }, hit.score.toFixed(3)) : null),
      h("button", {
        type: "button", class: "link-button more-like",
        onclick: (e) => { e.stopPropagation(); moreLikeThis(hit); },
      }, "More like this →")));
    return card;
  }

  function moreLikeThis(item) {
    closePanel();
    input.value = "";
    window.scrollTo({ top: 0, behavior: "smooth" });
    runSearch({ type: "similar", id: item.id, title: item.title });
  }

  $("more").addEventListener("click", () => { if (state.query && state.nextCursor) runSearch(state.query, { append: true }); });
  $("examples").addEventListener("click", (e) => {
    if (e.target.tagName !== "BUTTON") return;
    input.value = e.target.textContent;
    runSearch({ type: "text", q: input.value });
  });

  // ---------- image search: file picker and drag-and-drop anywhere ----------------------------
  function searchByImage(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showNotice(`${file.name}: not an image (PNG, JPEG, WebP, GIF or BMP).`);
      return;
    }
    const previous = state.query;
    if (previous && previous.type === "image") URL.revokeObjectURL(previous.url);
    input.value = "";
    runSearch({ type: "image", file, url: URL.createObjectURL(file) });
  }
  $("image-button").addEventListener("click", () => $("image-input").click());
  $("image-input").addEventListener("change", (e) => {
    searchByImage(e.target.files[0]);
    e.target.value = "";
  });

  let dragDepth = 0;
  const hasFiles = (e) => e.dataTransfer && [...(e.dataTransfer.types || [])].includes("Files");
  window.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth++;
    $("drop-overlay").hidden = false;
  });
  window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) $("drop-overlay").hidden = true;
  });
  window.addEventListener("drop", (e) => {
    if (!e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    dragDepth = 0;
    $("drop-overlay").hidden = true;
    searchByImage(e.dataTransfer.files[0]);
  });

  // ---------- item panel and click events -----------------------------------------------------
  function closePanel() {
    $("panel").hidden = true;
    $("scrim").hidden = true;
  }
  $("panel-close").addEventListener("click", closePanel);
  $("scrim").addEventListener("click", closePanel);

  /** Open the side panel for an item, send the click as an event, then refresh recommendations. */
  async function openItem(hit, { source, recommendationId = null } = {}) {
    const body = $("panel-body");
    $("panel-kind").replaceWith(Object.assign(kindTag(hit.kind), { id: "panel-kind" }));
    $("panel-category").textContent = hit.category ? hit.category.replace(/-/g, " ") : "";
    const note = h("p", { class: "event-note", id: "event-note" }, state.user ? `Sending click as ${state.user}…` : "");
    const alsoBox = h("div", { id: "panel-also" }); // kept across re-renders: filled by loadAlso
    const render = (item) => body.replaceChildren(
      thumb(item),
      h("h2", { id: "panel-title" }, item.title),
      facts(item),
      item.text ? h("p", { class: "text" }, item.text) : null,
      item.tags && item.tags.length ? h("div", { class: "tags" }, item.tags.map((t) => h("span", { class: "tag" }, `#${t}`))) : null,
      attributesTable(item.attributes),
      h("div", { class: "panel-actions" },
        h("button", { type: "button", class: "button primary", onclick: () => moreLikeThis(item) }, "More like this"),
        h("button", { type: "button", class: "button", onclick: closePanel }, "Close")),
      note,
      alsoBox);
    render(hit);
    $("panel").hidden = false;
    $("scrim").hidden = false;
    $("panel").dataset.id = hit.id;
    $("panel-close").focus({ preventScroll: true });

    const detail = api(`/items/${encodeURIComponent(hit.id)}`).then((item) => {
      if ($("panel").dataset.id === hit.id && !$("panel").hidden) render(item);
    }).catch((err) => { if ($("panel").dataset.id === hit.id) note.textContent = err.message; });
    // A click on a text search's result carries its query: query -> item pairs for fine-tuning.
    const text = source === "search" && state.query && state.query.type === "text" ? state.query.q : null;
    const sent = sendClick(hit.id, recommendationId, text);
    const also = loadAlso(hit.id, alsoBox);
    await Promise.allSettled([detail, sent, also]);
  }

  /** "Often engaged with" in the panel: GET /items/<id>/also (skipped quietly where it does not exist). */
  async function loadAlso(itemId, box) {
    let body;
    try {
      body = await api(`/items/${encodeURIComponent(itemId)}/also?k=6&explain=true`);
    } catch {
      return;
    }
    const hits = (body.hits || []).slice(0, 6);
    if ($("panel").dataset.id !== itemId || !hits.length) return;
    box.replaceChildren(
      h("h4", { class: "panel-subhead" }, body.strategy === "also" ? "People also engaged with" : "Related"),
      h("div", { class: "mini-grid" }, hits.map((x) => h("button", {
        type: "button", class: "mini", title: (x.reasons || []).map(reasonText).join("\n") || x.title, dataset: { id: x.id },
        onclick: () => openItem(x, { source: "also", recommendationId: body.recommendation_id }),
      }, thumb(x), h("span", { class: "mini-title" }, x.title)))));
  }

  function attributesTable(attributes) {
    const rows = Object.entries(attributes || {}).filter(([, v]) => v !== null && typeof v !== "object");
    if (!rows.length) return null;
    return h("table", { class: "attrs" }, h("tbody", null, rows.map(([k, v]) =>
      h("tr", null, h("th", null, k.replace(/_/g, " ")), h("td", null, String(v))))));
  }

  async function sendClick(itemId, recommendationId, query = null) {
    if (!state.user) return;
    const event = { user_id: state.user, item_id: itemId, type: "click" };
    if (recommendationId) event.recommendation_id = recommendationId;
    if (typeof query === "string" && query.trim()) event.query = query.trim().slice(0, 512);
    const setNote = (text, cls) => {
      const n = document.getElementById("event-note");
      if (n) { n.textContent = text; n.className = `event-note ${cls}`; }
    };
    try {
      const out = await api("/events", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(event) });
      const r = out.results && out.results[0];
      if (out.rejected) {
        setNote(`Click not recorded: ${(r && r.reason) || "rejected"}`, "err");
        return;
      }
      setNote(`Click recorded for ${state.user}; recommendations updated.`, "ok");
    } catch (err) {
      const why = err.status === 401 || err.status === 403
        ? `Click not recorded: ${err.message} (this page sends no API key)` : `Click not recorded: ${err.message}`;
      setNote(why, "err");
      showNotice(why);
      return;
    }
    await loadRecs();
    toast(`Click sent as ${state.user} · recommendations refreshed`);
  }

  // ---------- users and recommendations -------------------------------------------------------
  function guestId() {
    let id = localStorage.getItem("recsys.guest");
    if (!id) {
      id = `guest-${Math.random().toString(36).slice(2, 8)}`;
      localStorage.setItem("recsys.guest", id);
    }
    return id;
  }

  function initials(user) {
    if (user.startsWith("guest-")) return "G";
    const m = /(\d+)$/.exec(user);
    return m ? m[1].slice(-2) : user.replace(/[^a-z]/gi, "").slice(0, 2).toUpperCase() || "?";
  }

  async function loadUsers() {
    const select = $("user");
    let users = [];
    try {
      const body = await api("/users?k=20");
      users = body.users || [];
      state.usersApi = true;
    } catch (err) {
      state.usersApi = false;
      // The demo catalog's users, so clicks still carry a user while the users API is missing
      // or refused (401/403: listing users needs an admin key once keys are configured).
      users = Array.from({ length: 12 }, (_, i) => ({ id: `u-${String(i + 1).padStart(3, "0")}` }));
    }
    const guest = guestId();
    const demo = h("optgroup", { label: state.usersApi ? "Demo users (most recently active)" : "Demo users" },
      users.map((u) => h("option", { value: u.id }, u.events !== undefined ? `${u.id} · ${u.events} events` : u.id)));
    const fresh = h("optgroup", { label: "Start fresh" }, h("option", { value: guest }, `New visitor (${guest})`));
    select.replaceChildren(demo, fresh);
    const saved = localStorage.getItem("recsys.user");
    const ids = [...users.map((u) => u.id), guest];
    state.user = saved && ids.includes(saved) ? saved : (users[0] ? users[0].id : guest);
    select.value = state.user;
    $("user-avatar").textContent = initials(state.user);
  }

  $("user").addEventListener("change", (e) => {
    state.user = e.target.value;
    localStorage.setItem("recsys.user", state.user);
    $("user-avatar").textContent = initials(state.user);
    loadRecs();
  });

  async function loadRecs() {
    const row = $("recs-row");
    const notice = $("recs-notice");
    const strategy = $("recs-strategy");
    const meta = $("recs-meta");
    if (!state.user) return;
    const seq = ++state.recsSeq;
    const user = state.user;
    if (!row.children.length) {
      row.replaceChildren(...Array.from({ length: 7 }, () => h("div", { class: "rec-card", "aria-hidden": "true" },
        h("div", { class: "thumb skeleton" }), h("div", { class: "skeleton skeleton-line", style: "width:85%;margin-top:10px" }))));
    }
    row.classList.add("loading");
    let body;
    try {
      body = await api(`/users/${encodeURIComponent(user)}/recommendations?k=${REC_COUNT}&explain=true&diversity=0.3`);
    } catch (err) {
      if (seq !== state.recsSeq) return;
      row.classList.remove("loading");
      row.replaceChildren();
      strategy.hidden = true;
      meta.textContent = "";
      state.recs = null;
      row.dataset.signature = `error:${err.status}`;
      row.dataset.recommendationId = "";
      notice.textContent = UNAVAILABLE.has(err.status)
        ? `Recommendations are not available on this service right now (${err.status}: ${err.message}).`
        : `Could not load recommendations: ${err.message}`;
      notice.hidden = false;
      return;
    }
    if (seq !== state.recsSeq) return;
    state.recs = body;
    row.classList.remove("loading");
    notice.hidden = true;
    const hits = body.hits || [];
    // A user's page is personal when it starts from their history; otherwise the fallbacks
    // (trending, popular, newest) answered: no history yet, or nothing liked in it.
    const cold = !(body.strategy || "").startsWith("personalized");
    strategy.hidden = !body.strategy;
    strategy.className = `pill${cold ? " cold" : ""}`;
    strategy.textContent = body.strategy === "cold_start" ? "Popular now · no history yet"
      : cold ? "Popular now" : "Personalized";
    strategy.title = `strategy: ${body.strategy}`;
    meta.textContent = `for ${body.user_id || user}${typeof body.took_ms === "number" ? ` · ${Math.round(body.took_ms)} ms` : ""}`;
    row.dataset.signature = `${body.strategy}:${hits.map((x) => x.id).join(",")}`;
    row.dataset.recommendationId = body.recommendation_id || "";
    row.dataset.strategy = body.strategy || "";
    if (!hits.length) {
      row.replaceChildren();
      notice.textContent = "Nothing to recommend yet: search and click a few results.";
      notice.hidden = false;
      return;
    }
    row.replaceChildren(...hits.map((hit) => recCard(hit, body.recommendation_id)));
    fadeRow();
  }

  /** The row fades out at the right edge while more cards are hidden there. */
  function fadeRow() {
    const row = $("recs-row");
    row.classList.toggle("at-end", row.scrollLeft + row.clientWidth >= row.scrollWidth - 4);
  }
  $("recs-row").addEventListener("scroll", fadeRow, { passive: true });
  window.addEventListener("resize", fadeRow);

  function recCard(hit, recommendationId) {
    const reasons = (hit.reasons || []).map(reasonText).filter(Boolean);
    const card = h("article", {
      class: "rec-card", tabindex: "0",
      dataset: { id: hit.id, kind: hit.kind, category: hit.category || "", signals: (hit.signals || []).join(",") },
      title: reasons.join("\n") || hit.title,
      onclick: () => openItem(hit, { source: "recommendations", recommendationId }),
      onkeydown: (e) => { if (e.key === "Enter") openItem(hit, { source: "recommendations", recommendationId }); },
    },
    thumb(hit),
    h("h3", null, hit.title),
    reasons.length ? h("p", { class: "reason" }, reasons[0]) : null,
    signalBadges(hit.signals));
    return card;
  }

  // ---------- image search availability (from /status) ----------------------------------------
  async function checkImageSearch() {
    try {
      const status = await api("/status");
      const button = $("image-button");
      if (!status.spaces || !status.spaces.clip || status.clip_error) {
        const why = status.clip_error || (status.skipped_spaces && status.skipped_spaces.clip) || "the image (CLIP) space is not built";
        button.classList.add("unavailable");
        button.title = `Image search is not available: ${why}`;
        button.dataset.available = "false";
      } else {
        button.dataset.available = "true";
      }
    } catch { /* the page works without it */ }
  }

  // ---------- start -------------------------------------------------------------------------
  async function start() {
    const facets = loadFacets();
    restoreFromUrl();
    checkImageSearch();
    await loadUsers();
    await Promise.allSettled([facets, loadRecs()]);
    document.body.dataset.ready = "true";
  }
  start();
})();
