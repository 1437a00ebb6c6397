// Flightdeck's dashboard: reads the API under its `/ui` prefix, polls it while the page is open,
// and acts through the same routes and authorization rules as the CLI and CI. No framework: the
// DOM is built with createElement and textContent (nothing the API returns is parsed as HTML).
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const POLL_MS = Math.min(60, Math.max(1, Number(params.get("poll")) || 5)) * 1000;
  const METRICS_MS = 30000;
  const ACTIVE = ["PENDING", "AWAITING_APPROVAL", "DEPLOYING", "SHIFTING", "ROLLING_BACK"];
  const BAD = ["ROLLED_BACK", "FAILED"];
  const state = {
    settings: null, user: null, token: null, me: null,
    rows: [], metrics: new Map(), metricsAt: 0, days: 30,
    selected: null, detail: null, lastOk: 0, error: null, busy: false,
  };

  // ---- DOM helpers
  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      // Through the CSSOM: the page's policy allows no inline style attributes.
      else if (k === "style") node.style.cssText = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const svgEl = (tag, attrs) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  const enc = encodeURIComponent;
  const words = (s) => String(s || "").toLowerCase().replace(/_/g, " ");
  const shortDigest = (d) => (d || "").replace(/^sha256:/, "").slice(0, 12);
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  const ago = (iso) => `${duration((Date.now() - Date.parse(iso)) / 1000)} ago`;
  const when = (iso) => el("time", { datetime: iso, title: new Date(iso).toLocaleString() }, ago(iso));
  const pill = (status) => el("span", { class: `pill s-${status}` }, words(status));
  const tagOf = (d) => d.tag || shortDigest(d.digest);
  // The tag and short digest, or the digest alone for an image deployed by digest.
  const revision = (d) => (d.tag
    ? [el("strong", {}, d.tag), " ", el("code", { title: d.digest }, shortDigest(d.digest))]
    : [el("code", { title: d.digest }, shortDigest(d.digest))]);

  // ---- sign-in and the API
  function headers() {
    const h = { accept: "application/json" };
    if (state.settings && state.settings.signin === "local" && state.user) h["x-flightdeck-local-user"] = state.user;
    if (state.token) h.authorization = `Bearer ${state.token}`;
    return h;
  }
  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: headers() };
    if (options.body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const response = await fetch(`${state.settings.api}${path}`, init);
    let body = null;
    try { body = await response.json(); } catch { body = null; }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const randomText = () => b64url(crypto.getRandomValues(new Uint8Array(32)));
  function claimsOf(jwt) {
    try { return JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); } catch { return null; }
  }
  async function discovery() {
    const r = await fetch(`${state.settings.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`);
    if (!r.ok) throw new Error(`the sign-in provider's discovery document answered ${r.status}`);
    return r.json();
  }
  const redirectUri = () => `${location.origin}${location.pathname}`;
  async function signIn() {
    const config = await discovery();
    const verifier = randomText();
    const nonce = randomText();
    // The fragment (a chat link's `#d=<id>`) does not survive the redirect: kept here.
    sessionStorage.setItem("flightdeck.pkce", JSON.stringify({ verifier, nonce, hash: location.hash }));
    const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
    const url = new URL(config.authorization_endpoint);
    url.search = new URLSearchParams({
      response_type: "code", client_id: state.settings.client_id, redirect_uri: redirectUri(),
      scope: "openid email", code_challenge: challenge, code_challenge_method: "S256", state: nonce,
    }).toString();
    location.assign(url.toString());
  }
  async function finishSignIn() {
    const code = params.get("code");
    const saved = JSON.parse(sessionStorage.getItem("flightdeck.pkce") || "null");
    if (!code || !saved) return;
    sessionStorage.removeItem("flightdeck.pkce");
    history.replaceState(null, "", redirectUri() + (saved.hash || location.hash));
    if (params.get("state") !== saved.nonce) throw new Error("sign-in answer does not match the request; sign in again");
    const config = await discovery();
    const r = await fetch(config.token_endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "authorization_code", code, redirect_uri: redirectUri(),
        client_id: state.settings.client_id, code_verifier: saved.verifier,
      }),
    });
    if (!r.ok) throw new Error(`the sign-in provider refused the code (${r.status})`);
    const tokens = await r.json();
    if (!tokens.id_token) throw new Error("the sign-in provider sent no ID token");
    sessionStorage.setItem("flightdeck.token", tokens.id_token);
  }
  function storedToken() {
    const token = sessionStorage.getItem("flightdeck.token");
    const claims = token && claimsOf(token);
    if (!claims || !claims.exp || claims.exp * 1000 < Date.now() + 30000) {
      sessionStorage.removeItem("flightdeck.token");
      return null;
    }
    return token;
  }

  function renderIdentity() {
    const box = $("identity");
    box.replaceChildren();
    const s = state.settings;
    if (s.signin === "local") {
      const select = el("select", { id: "user", onchange: (e) => {
        state.user = e.target.value;
        localStorage.setItem("flightdeck.user", state.user);
        state.me = null;
        refresh(true);
      } }, s.users.map((u) => el("option", { value: u, selected: u === state.user }, u)));
      box.append(el("label", { for: "user" }, "Acting as (local stack)"), select);
    } else if (s.signin === "oidc") {
      if (state.token) {
        const claims = claimsOf(state.token) || {};
        box.append(el("span", {}, `Signed in as ${claims.email || claims.sub}`),
          el("button", { type: "button", onclick: () => { sessionStorage.removeItem("flightdeck.token"); location.reload(); } }, "Sign out"));
      } else {
        box.append(el("button", { type: "button", class: "primary", onclick: () => signIn().catch(showError) }, "Sign in"));
      }
    } else {
      box.append(el("span", {}, "No sign-in configured"));
    }
  }

  // ---- what the viewer may do
  const names = () => (state.me ? [state.me.principal, state.me.alias].filter(Boolean) : []);
  function may(reg, action) {
    if (!state.me) return false;
    if (state.me.admin) return true;
    const listed = action === "approve" ? reg.approvers : reg.deployers;
    return (listed || []).some((p) => names().includes(p));
  }
  const startedByViewer = (d) => (d.starters || []).some((p) => names().includes(p));

  const CONFIRM = {
    rollback: "Roll this deployment back to the revision that served before it?",
    abort: "Abort this deployment?",
    revert: "Revert to the revision that succeeded before this one?",
  };
  async function act(d, action) {
    const path = action === "revert" ? "rollback" : action;
    if (CONFIRM[action] && !window.confirm(CONFIRM[action])) return;
    try {
      const after = await api(`/deployments/${enc(d.id)}/${path}`, { method: "POST" });
      showNotice(`${action[0].toUpperCase()}${action.slice(1)} of ${d.service} ${tagOf(d)} accepted: ${words(after.status)}.`, true);
    } catch (e) {
      showNotice(`Could not ${action} ${d.service} ${tagOf(d)}: ${e.message}`, false);
    }
    refresh(true);
  }
  function actions(reg, d) {
    const offered = [];
    const s = d.status;
    if (s === "AWAITING_APPROVAL" && may(reg, "approve")) offered.push(["approve", "Approve", "primary"]);
    if ((s === "DEPLOYING" || s === "SHIFTING") && may(reg, "promote")) offered.push(["promote", "Promote", ""]);
    if ((s === "DEPLOYING" || s === "SHIFTING") && may(reg, "rollback")) offered.push(["rollback", "Roll back", "danger"]);
    if (["PENDING", "AWAITING_APPROVAL", "DEPLOYING", "SHIFTING"].includes(s) && may(reg, "abort")) offered.push(["abort", "Abort", "danger"]);
    return offered.map(([action, label, cls]) => el("button", {
      type: "button", class: cls, "data-action": action,
      "aria-label": `${label} ${d.service} ${d.environment} ${tagOf(d)}`,
      onclick: () => act(d, action),
    }, label));
  }
  function fourEyes(reg, d) {
    const starters = (d.starters || []).length ? d.starters : [d.started_by].filter(Boolean);
    const who = starters.length ? starters.join(", ") : "nobody recorded";
    const you = startedByViewer(d) ? " You started it, so another approver must approve it." : "";
    return el("p", { class: "four-eyes", id: `four-eyes-${d.id}` },
      `Four eyes: started by ${who}, who may not approve it.${you} Approvers: ${(reg.approvers || []).join(", ") || "admins only"}.`);
  }
  const timelineButton = (d) => el("button", {
    type: "button", class: "link", "aria-label": `Timeline of ${d.service} ${d.environment} ${tagOf(d)}`,
    onclick: () => { location.hash = `d=${d.id}`; },
  }, "Timeline");

  // ---- rendering
  function gates(reg, d) {
    const g = d.gates || {};
    const items = [];
    const alarms = g.alarms || [];
    const alarmed = (d.events || []).some((e) => e.actor === "aws.cloudwatch" && /ALARM/.test(e.reason || "") && !/\bOK\b/.test(e.reason || ""));
    items.push([alarms.length ? `alarms: ${alarms.length} watched${alarmed ? ", one fired" : ", quiet"}` : "alarms: none", alarmed ? "bad" : "ok"]);
    items.push([`crashes: ${g.failed_tasks || 0} of ${g.max_failed_tasks}`, g.failed_tasks ? "bad" : "ok"]);
    if (reg.gates && reg.gates.approval) items.push([d.status === "AWAITING_APPROVAL" ? "approval: waiting" : "approval: given", d.status === "AWAITING_APPROVAL" ? "wait" : "ok"]);
    if (g.verdict) {
      const v = g.verdict.judgement.verdict;
      items.push([`canary: ${words(v)} at ${g.verdict.percent}%`, v === "fail" ? "bad" : v === "pass" ? "ok" : "wait"]);
    } else if (reg.gates && reg.gates.analysis) {
      items.push(["canary: no verdict yet", "wait"]);
    }
    const hold = d.phase && d.phase.hold;
    if (hold) items.push([hold.gate === "freeze" ? `held by freeze until ${new Date(hold.until).toLocaleString()}` : "waiting for the image scan", "wait"]);
    return el("ul", { class: "gates", "aria-label": "Gates" }, items.map(([t, c]) => el("li", { class: `gate ${c}` }, t)));
  }
  function inFlight(reg, d) {
    const phase = d.phase || {};
    const bits = [];
    if (d.steps && d.steps.length) bits.push(`step ${Math.min(d.step + 1, d.steps.length)} of ${d.steps.length} (${d.steps.join(" → ")}%)`);
    if (d.stage) bits.push(`ECS stage ${words(d.stage)}`);
    if (phase.bake_until) {
      const left = (Date.parse(phase.bake_until) - Date.now()) / 1000;
      bits.push(left > 0 ? `bake ${duration(left)} left` : "bake done");
    } else if (d.status === "DEPLOYING") {
      bits.push("rolling out");
    }
    if (phase.progress_deadline && ["DEPLOYING", "SHIFTING"].includes(d.status)) {
      bits.push(`deadline in ${duration((Date.parse(phase.progress_deadline) - Date.now()) / 1000)}`);
    }
    return el("div", { class: "inflight", "data-deployment": d.id },
      el("p", {}, pill(d.status), " ", revision(d), " ",
        el("span", { class: "muted" }, `by ${d.started_by || d.trigger}, `), when(d.created_at)),
      el("div", { class: "traffic" },
        el("div", { class: "muted" }, `Traffic on the new revision: ${d.traffic_percent}%`),
        el("div", { class: "track", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
          "aria-valuenow": String(d.traffic_percent), "aria-label": `Traffic on ${tagOf(d)}` },
        el("div", { class: "fill", style: `width:${d.traffic_percent}%` }))),
      bits.length ? el("p", { class: "muted" }, bits.join(" · ")) : null,
      gates(reg, d),
      d.status === "AWAITING_APPROVAL" ? fourEyes(reg, d) : null,
      el("div", { class: "actions" }, actions(reg, d), timelineButton(d)));
  }
  function serviceCard(row) {
    const { reg, recent, current } = row;
    const flying = recent.find((d) => ACTIVE.includes(d.status));
    const currentBlock = current
      ? el("dl", { class: "facts" },
        el("dt", {}, "Serving"), el("dd", {}, revision(current)),
        el("dt", {}, "Since"), el("dd", {}, when(current.finished_at || current.updated_at)))
      : el("p", { class: "empty" }, "Nothing deployed by Flightdeck yet");
    const revert = current && may(reg, "rollback") && !flying
      ? el("button", { type: "button", class: "danger", "aria-label": `Revert ${reg.service} ${reg.environment} ${tagOf(current)}`, onclick: () => act(current, "revert") }, "Revert")
      : null;
    const older = recent.filter((d) => d !== flying).slice(0, 4);
    return el("article", { class: "card", "data-service": reg.service, "data-environment": reg.environment,
      "aria-label": `${reg.service} in ${reg.environment}` },
    el("h3", {}, reg.service, el("span", { class: "env" }, reg.environment), el("span", { class: "muted" }, reg.engine ? reg.engine.type : "")),
    currentBlock,
    flying ? inFlight(reg, flying) : el("p", { class: "empty" }, "No deployment in flight"),
    revert ? el("div", { class: "actions" }, revert) : null,
    older.length ? el("details", {}, el("summary", {}, `Recent deployments (${older.length})`),
      el("ul", { class: "list" }, older.map((d) => el("li", {}, pill(d.status), " ", tagOf(d), " ", el("span", { class: "muted" }, ago(d.created_at)), " ", timelineButton(d))))) : null);
  }
  function renderApprovals() {
    const waiting = state.rows.flatMap((row) => row.recent.filter((d) => d.status === "AWAITING_APPROVAL").map((d) => [row.reg, d]));
    $("approvals").replaceChildren(...(waiting.length
      ? waiting.map(([reg, d]) => el("li", { class: "card", "data-deployment": d.id },
        el("h3", {}, `${d.service}`, el("span", { class: "env" }, d.environment), pill(d.status)),
        el("p", {}, revision(d), " · waiting ", when(d.phase.since || d.updated_at)),
        fourEyes(reg, d),
        el("div", { class: "actions" }, actions(reg, d), timelineButton(d))))
      : [el("li", { class: "empty" }, "Nothing awaits approval")]));
  }
  function renderFailures() {
    const bad = state.rows.flatMap((row) => row.recent.filter((d) => BAD.includes(d.status)))
      .sort((a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at)).slice(0, 10);
    $("failures").replaceChildren(...(bad.length
      ? bad.map((d) => el("li", { class: "card", "data-deployment": d.id },
        el("p", {}, pill(d.status), " ", el("strong", {}, `${d.service} · ${d.environment}`), " ", tagOf(d), " ", when(d.finished_at || d.updated_at)),
        el("p", { class: "reason" }, d.reason || "no reason recorded"),
        timelineButton(d)))
      : [el("li", { class: "empty" }, "No rollbacks or failures among the recent deployments")]));
  }
  function chart(m) {
    const days = m.daily || [];
    const max = Math.max(1, ...days.map((d) => d.succeeded + d.failed));
    const w = 300; const h = 56; const bw = w / Math.max(1, days.length);
    const svg = svgEl("svg", { class: "chart", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", role: "img",
      "aria-label": `Deployments per day over ${m.days} days: ${days.reduce((a, d) => a + d.succeeded, 0)} succeeded, ${days.reduce((a, d) => a + d.failed, 0)} rolled back or failed` });
    days.forEach((d, i) => {
      const okH = (d.succeeded / max) * (h - 2); const badH = (d.failed / max) * (h - 2);
      if (d.succeeded) svg.append(svgEl("rect", { x: i * bw + 1, y: h - okH, width: Math.max(1, bw - 2), height: okH, fill: "#1a7f37" }));
      if (d.failed) svg.append(svgEl("rect", { x: i * bw + 1, y: h - okH - badH, width: Math.max(1, bw - 2), height: badH, fill: "#cf222e" }));
    });
    svg.append(svgEl("line", { x1: 0, x2: w, y1: h - 0.5, y2: h - 0.5, stroke: "#8c959f" }));
    return svg;
  }
  function renderDora() {
    const cards = state.rows.map(({ reg }) => {
      const m = state.metrics.get(`${reg.service}/${reg.environment}`);
      if (!m) return el("article", { class: "card" }, el("h3", {}, reg.service, el("span", { class: "env" }, reg.environment)), el("p", { class: "empty" }, "Loading…"));
      const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);
      const figure = (value, label) => el("div", { class: "figure" }, el("b", {}, value), el("small", {}, label));
      return el("article", { class: "card", "aria-label": `DORA figures of ${reg.service} in ${reg.environment}` },
        el("h3", {}, reg.service, el("span", { class: "env" }, reg.environment), el("span", { class: "muted" }, `last ${m.days} days`)),
        el("div", { class: "figures" },
          figure(`${m.deployment_frequency_per_day}/day`, "deployment frequency"),
          figure(duration(m.lead_time_seconds.median), "lead time (median)"),
          figure(pct(m.change_failure_rate), "change failure rate"),
          figure(duration(m.time_to_restore_seconds.median), "failed-deployment recovery (median)"),
          figure(pct(m.rework_rate), "rework rate")),
        chart(m),
        el("p", { class: "muted" }, "Per day: succeeded (green), rolled back or failed (red)"));
    });
    $("dora").replaceChildren(...(cards.length ? cards : [el("p", { class: "empty" }, "No services registered")]));
  }

  const KINDS = {
    status: "status", traffic: "traffic", task: "task failure", alarm: "alarm", scan: "scan", action: "action", note: "note",
  };
  function kindOf(e) {
    if (e.status) return "status";
    if (e.actor === "aws.ecs") return "task";
    if (e.actor === "aws.cloudwatch") return "alarm";
    if (e.actor === "aws.ecr") return "scan";
    if (/weight|traffic|%/.test(e.reason || "")) return "traffic";
    if (e.actor && e.actor !== "flightdeck") return "action";
    return "note";
  }
  function renderTimeline() {
    const section = $("timeline-section");
    const d = state.detail;
    if (!state.selected || !d) { section.hidden = true; return; }
    section.hidden = false;
    const events = [...(d.events || [])].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
    const start = Date.parse(d.created_at);
    const end = Math.max(start + 1000, Date.parse(d.finished_at || d.updated_at), ...events.map((e) => Date.parse(e.at)));
    const span = end - start;
    const track = el("div", { class: "tl-track", "aria-hidden": "true" }, events.map((e) => el("span", {
      class: `tl-mark k-${kindOf(e)}`, style: `left:${(((Date.parse(e.at) - start) / span) * 100).toFixed(2)}%`, title: e.reason || words(e.status),
    })));
    const reasons = (d.gates && d.gates.failure_reasons) || [];
    $("timeline").replaceChildren(
      el("article", { class: "card", "data-deployment": d.id },
        el("h3", {}, `${d.service}`, el("span", { class: "env" }, d.environment), pill(d.status), revision(d)),
        el("p", { class: "muted" }, `Started by ${d.started_by || d.trigger} ${ago(d.created_at)}; ${d.finished_at ? `ended after ${duration((Date.parse(d.finished_at) - start) / 1000)}` : "in flight"}.`),
        d.reason ? el("p", { class: "reason" }, el("strong", {}, "Why: "), d.reason) : null,
        reasons.length ? el("p", {}, el("strong", {}, "Task failures by reason: "), reasons.map((r) => `${r.label} ×${r.count}`).join(", ")) : null,
        el("ul", { class: "legend", "aria-label": "Legend" }, Object.entries(KINDS).map(([k, label]) => el("li", {}, el("span", { class: `k-${k}` }), label))),
        track,
        el("div", { class: "tl-axis", "aria-hidden": "true" }, el("span", {}, new Date(start).toLocaleTimeString()), el("span", {}, new Date(end).toLocaleTimeString())),
        el("ol", { class: "timeline", "aria-label": "Audit trail, oldest first" }, events.map((e) => {
          const kind = kindOf(e);
          return el("li", { class: `k-row-${kind}` },
            el("span", { class: `tl-dot k-${kind}`, "aria-hidden": "true" }),
            el("time", { datetime: e.at, title: new Date(e.at).toLocaleString() }, `+${duration((Date.parse(e.at) - start) / 1000)}`),
            el("span", { class: "kind" }, KINDS[kind]),
            e.status ? pill(e.status) : null, " ",
            el("span", { class: "what" }, e.reason || ""),
            e.actor ? el("span", { class: "muted" }, ` — ${e.actor}`) : null);
        }))));
  }
  function render() {
    $("services").replaceChildren(...(state.rows.length ? state.rows.map(serviceCard) : [el("p", { class: "empty" }, "No services registered")]));
    renderApprovals();
    renderFailures();
    renderDora();
    renderTimeline();
  }
  function renderFreshness() {
    const node = $("freshness");
    if (!state.lastOk) { node.textContent = state.error ? `Cannot load: ${state.error}` : "Loading…"; return; }
    const age = (Date.now() - state.lastOk) / 1000;
    const stale = age * 1000 > POLL_MS * 3;
    node.classList.toggle("stale", stale);
    node.textContent = stale
      ? `Stale: last updated ${duration(age)} ago${state.error ? ` (${state.error})` : ""}`
      : `Updated ${duration(age)} ago · refreshes every ${POLL_MS / 1000}s`;
  }
  let noticeTimer = null;
  function showNotice(text, ok) {
    const node = $("notice");
    node.textContent = text;
    node.classList.toggle("ok", !!ok);
    node.hidden = false;
    clearTimeout(noticeTimer);
    if (ok) noticeTimer = setTimeout(() => { node.hidden = true; }, 8000);
  }
  const showError = (e) => showNotice(e.message || String(e), false);

  // ---- polling
  async function refresh(force) {
    // Asked while a poll is in flight (an action, an opened timeline): run again right after it.
    if (state.busy) { state.again = state.again || (force ? "force" : "poll"); return; }
    state.busy = true;
    try {
      if (!state.me) state.me = await api("/me");
      const { services } = await api("/services");
      state.rows = await Promise.all(services.map(async (reg) => {
        const q = `service=${enc(reg.service)}&environment=${enc(reg.environment)}`;
        const [recent, current] = await Promise.all([
          api(`/deployments?${q}&limit=10`), api(`/deployments?${q}&status=SUCCEEDED&limit=1`)]);
        return { reg, recent: recent.deployments, current: current.deployments[0] || null };
      }));
      if (force || Date.now() - state.metricsAt > METRICS_MS) {
        const figures = await Promise.all(state.rows.map(({ reg }) =>
          api(`/metrics?service=${enc(reg.service)}&environment=${enc(reg.environment)}&days=${state.days}`)));
        state.metrics = new Map(figures.map((m) => [`${m.service}/${m.environment}`, m]));
        state.metricsAt = Date.now();
      }
      state.detail = state.selected ? await api(`/deployments/${enc(state.selected)}`) : null;
      state.lastOk = Date.now();
      state.error = null;
      render();
      document.body.dataset.loaded = String(state.lastOk);
    } catch (e) {
      state.error = e.message;
      if (e.status === 401 && state.settings.signin === "oidc") {
        // The sign-in expired: offer it again rather than polling into refusals.
        sessionStorage.removeItem("flightdeck.token");
        state.token = null;
        renderIdentity();
        showNotice("Your sign-in expired: sign in again to go on.", false);
      } else if (e.status === 401 || e.status === 403) {
        showNotice(`The API refused the page: ${e.message}`, false);
      }
    } finally {
      state.busy = false;
      renderFreshness();
      const again = state.again;
      state.again = null;
      if (again) refresh(again === "force");
    }
  }
  // Resolves once `ready()` holds (checked every 100 ms, for at most 10 s).
  function until(ready) {
    return new Promise((resolve) => {
      const started = Date.now();
      const check = () => (ready() || Date.now() - started > 10000 ? resolve() : setTimeout(check, 100));
      check();
    });
  }
  function select() {
    const m = /^#d=(d-[0-9a-f]{20})$/.exec(location.hash);
    state.selected = m ? m[1] : null;
    if (!state.selected) { state.detail = null; renderTimeline(); return; }
    refresh(false).then(() => until(() => state.detail && state.detail.id === state.selected))
      .then(() => $("timeline-title").focus());
  }

  async function start() {
    const r = await fetch("/dashboard.json", { headers: { accept: "application/json" } });
    state.settings = await r.json();
    if (state.settings.signin === "local") {
      const saved = localStorage.getItem("flightdeck.user");
      state.user = state.settings.users.includes(saved) ? saved : state.settings.users[0];
    }
    if (state.settings.signin === "oidc") {
      await finishSignIn().catch(showError);
      state.token = storedToken();
    }
    renderIdentity();
    $("days").addEventListener("change", (e) => { state.days = Number(e.target.value); refresh(true); });
    $("close-timeline").addEventListener("click", () => { history.pushState(null, "", location.pathname + location.search); select(); });
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.selected) $("close-timeline").click(); });
    window.addEventListener("hashchange", select);
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") refresh(false); });
    if (state.settings.signin === "oidc" && !state.token) {
      $("freshness").textContent = "Sign in to see the deployments";
      return;
    }
    select();
    await refresh(true);
    setInterval(() => { if (document.visibilityState === "visible") refresh(false); }, POLL_MS);
    setInterval(renderFreshness, 1000);
  }
  start().catch(showError);
})();
