// ctibroker wallboard: a supervisor session over the public protocol.
// State: agents by id (from supervisor.snapshot, then supervisor.agent.changed)
// and queues by name (supervisor.snapshot, then supervisor.queue.changed).
"use strict";
(() => {
  const $ = (s) => document.querySelector(s);
  const params = new URLSearchParams(location.search);
  // A token given in the page URL (?token=) is kept in this tab only and
  // taken out of the address bar at once: URLs end up in histories, logs
  // and shared links. It reaches the broker as a WebSocket subprotocol and
  // an Authorization header, never in a URL.
  if (params.has("token")) {
    sessionStorage.setItem("ctibroker.token", params.get("token"));
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.size ? "?" + params : "") + location.hash);
  }
  const token = () => sessionStorage.getItem("ctibroker.token") || "";
  const agents = new Map();
  const queues = new Map();
  let ws, sessionId = "", lastSeq = 0, retry = 500, selected = "";

  const statusOrder = ["ready", "not_ready", "after_call_work", "busy", "logged_out"];
  // Plain words, not state-machine names.
  const words = { ready: "Ready", not_ready: "Not ready", after_call_work: "Wrap-up", busy: "On a call", logged_out: "Logged out",
    inactive: "Logged out", busy_ready: "On a call", busy_not_ready: "On a call", busy_after_call_work: "On a call" };
  const label = (s) => words[s] || s.replace(/_/g, " ");
  const callWords = { ALERTING: "ringing", DIALING: "dialing", STARTED: "talking", HELD: "on hold", ENDED: "wrap-up" };
  // An agent not ready or in wrap-up longer than this (seconds; ?alertAfter=)
  // is shown in the alert colour.
  const alertAfter = Number(params.get("alertAfter") ?? 300);

  function connect() {
    const q = new URLSearchParams();
    const protocols = ["ctibroker.v1"];
    if (token()) protocols.push("ctibroker.bearer." + token()); else q.set("supervisor", params.get("supervisor") || "wallboard");
    if (lastSeq) q.set("since", lastSeq);
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws?${q}`, protocols);
    ws.onmessage = (e) => handle(JSON.parse(e.data));
    ws.onopen = () => { retry = 500; };
    ws.onclose = (e) => {
      setConn(false, e.code === 4401 || e.code === 1008 ? "signed out" : "disconnected, retrying…");
      if (e.code === 4000) return;
      if (!token() && e.code === 1006 && !sessionId) $("#login").hidden = false;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  function setConn(up, text) {
    const c = $("#conn");
    c.className = "conn " + (up ? "up" : "down");
    c.textContent = text;
  }

  function send(command, data) {
    ws.send(JSON.stringify({ command, target: sessionId, data }));
  }

  function handle(m) {
    if (typeof m.seq === "number") lastSeq = m.seq;
    if (m.command && m.command.startsWith("supervisor.agent.")) {
      // A supervisor action's reply: its outcome, not the connection's.
      $("#action-status").textContent = m.result === "failure" ? `${m.failure.code}: ${m.failure.message}` : "";
      return;
    }
    if (m.result === "failure" && m.command === "supervisor.subscribe" && m.failure.code === "NOT_SUPPORTED") {
      send("supervisor.subscribe", {}); // the switch reports no queues: agents only
      return;
    }
    if (m.result === "failure") { setConn(false, m.failure.code + ": " + m.failure.message); return; }
    switch (m.name) {
      case "session.initialized":
        setConn(true, "live");
        if (m.target !== sessionId || !m.data.resumed) {
          sessionId = m.target;
          send("supervisor.subscribe", { queues: [] });
        }
        break;
      case "supervisor.snapshot":
        agents.clear();
        for (const a of m.data.agents) agents.set(a.agentId, a);
        queues.clear();
        for (const q of m.data.queues || []) queues.set(q.name, q);
        render();
        renderQueues();
        break;
      case "supervisor.queue.changed":
        if (m.data.current) queues.set(m.data.queue, m.data.current); else queues.delete(m.data.queue);
        renderQueues();
        break;
      case "supervisor.agent.changed":
        if (m.data.current) agents.set(m.data.agentId, m.data.current); else agents.delete(m.data.agentId);
        render();
        if (m.data.agentId === selected) showHistory(selected);
        break;
    }
  }

  function visible() {
    const team = $("#team").value, by = $("#sort").value;
    const order = (a, b) => {
      if (by === "status") return statusOrder.indexOf(a.status) - statusOrder.indexOf(b.status) || a.agentId.localeCompare(b.agentId);
      if (by === "time") return a.statusSince - b.statusSince || a.agentId.localeCompare(b.agentId); // longest in status first
      return (a.displayName || a.agentId).localeCompare(b.displayName || b.agentId);
    };
    return [...agents.values()].filter((a) => !team || (a.teams || []).includes(team)).sort(order);
  }

  function render() {
    const teams = new Set();
    for (const a of agents.values()) (a.teams || []).forEach((t) => teams.add(t));
    const sel = $("#team"), cur = sel.value;
    const opts = ["", ...[...teams].sort()];
    if (sel.options.length !== opts.length || opts.some((t, i) => sel.options[i].value !== t)) {
      sel.innerHTML = "";
      for (const t of opts) sel.add(new Option(t || "all teams", t));
      sel.value = cur;
    }
    const list = visible();
    const counts = Object.fromEntries(statusOrder.map((s) => [s, 0]));
    for (const a of list) counts[a.status] = (counts[a.status] || 0) + 1;
    $("#summary").innerHTML = `<span class="count"><b>${list.length}</b>agents</span>` +
      statusOrder.map((s) => `<span class="count ${s}" data-status="${s}"><b>${counts[s]}</b>${label(s)}</span>`).join("");
    const tbody = $("#agents tbody");
    tbody.innerHTML = "";
    for (const a of list) {
      const tr = document.createElement("tr");
      tr.dataset.agent = a.agentId;
      const chans = (a.channels || []).map((c) =>
        `<span class="chan ${c.state}" title="${esc(c.name)}">${esc(c.type)} ${c.state === "ACTIVE" ? label(c.status) : c.state.toLowerCase()}${c.reasonName ? " · " + esc(c.reasonName) : ""}</span>` +
        (c.interactions || []).map((i) =>
          `<span class="ix ${esc(i.state)}" data-ix="${esc(i.id)}">${esc(i.direction)} ${esc(callWords[i.state] || i.state.toLowerCase())}${i.queue ? " · " + esc(i.queue) : ""} <span class="timer" data-since="${Number(i.stateSince)}"></span></span>`).join("")).join("");
      const reason = (a.channels || []).map((c) => c.reasonName).find((r) => r) || "";
      tr.innerHTML = `<td class="agent">${esc(a.displayName || a.agentId)}</td><td>${esc((a.teams || []).join(", "))}</td>` +
        `<td><span class="status ${a.status}">${label(a.status)}</span> <small class="reason">${esc(reason)}</small></td>` +
        `<td class="timer" data-since="${a.statusSince}"></td><td>${chans}</td>` +
        `<td class="actions"><button data-act="ready">Ready</button><button data-act="not_ready">Not ready</button><button data-act="logout">Log out</button></td>`;
      for (const btn of tr.querySelectorAll("button[data-act]")) {
        btn.onclick = (e) => {
          e.stopPropagation(); // not the row's click (history)
          if (btn.dataset.act === "logout") send("supervisor.agent.logout", { agentId: a.agentId });
          else send("supervisor.agent.setstate", { agentId: a.agentId, status: btn.dataset.act });
        };
      }
      tr.onclick = () => { selected = a.agentId; showHistory(a.agentId); };
      tbody.appendChild(tr);
    }
    $("#empty").hidden = list.length > 0;
    tick();
  }

  function tick() {
    const now = Date.now();
    for (const td of document.querySelectorAll("td.timer, span.timer")) {
      const s = Math.max(0, Math.floor((now - Number(td.dataset.since)) / 1000));
      const h = Math.floor(s / 3600), mm = String(Math.floor(s / 60) % 60).padStart(2, "0"), ss = String(s % 60).padStart(2, "0");
      td.textContent = h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
      const row = td.closest("tr[data-agent]");
      if (row && td.tagName === "TD") {
        const st = agents.get(row.dataset.agent)?.status;
        row.classList.toggle("alert", (st === "not_ready" || st === "after_call_work") && s >= alertAfter);
      }
    }
  }

  async function showHistory(agent) {
    const from = new Date(); from.setHours(0, 0, 0, 0);
    const headers = token() ? { Authorization: "Bearer " + token() } : {};
    const res = await fetch(`/v1/agents/${encodeURIComponent(agent)}/history?from=${from.getTime()}&pageSize=500`, { headers });
    if (!res.ok) return;
    const body = await res.json();
    // The bar spans the agent's day so far: first activity to now.
    const start = Math.max(from.getTime(), body.list.length ? body.list[0].start : from.getTime());
    const span = Math.max(Date.now() - start, 1);
    $("#detail").hidden = false;
    $("#detail-agent").textContent = agent;
    const bar = $("#timeline");
    bar.innerHTML = "";
    for (const iv of body.list) {
      const status = iv.state === "ACTIVE" ? iv.status.replace(/^busy_.*/, "busy") : "inactive";
      const seg = document.createElement("div");
      seg.className = "seg";
      seg.style.left = ((iv.start - start) / span * 100) + "%";
      seg.style.width = Math.max((iv.end - iv.start) / span * 100, 0.2) + "%";
      seg.style.background = `var(--${status})`;
      seg.title = `${iv.channel}: ${label(status)} ${iv.reasonName || ""} ${new Date(iv.start).toLocaleTimeString()}–${new Date(iv.end).toLocaleTimeString()}`;
      bar.appendChild(seg);
    }
    $("#span").textContent = `${new Date(start).toLocaleTimeString()} – now`;
    const legend = $("#legend");
    legend.textContent = "";
    for (const s of [...statusOrder.slice(0, 4), "inactive"]) {
      const item = document.createElement("span"), swatch = document.createElement("i");
      swatch.style.background = `var(--${s})`; // set through the DOM: the page's CSP allows no style attributes
      item.append(swatch, label(s));
      legend.append(item);
    }
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  }

  // Queues: live from the subscription (hidden when the caller may see
  // none or the switch reports none).
  function renderQueues() {
    const tbody = $("#queuetable tbody");
    tbody.innerHTML = "";
    const list = [...queues.values()].sort((a, b) => a.name.localeCompare(b.name));
    for (const q of list) {
      const tr = document.createElement("tr");
      tr.dataset.queue = q.name;
      tr.innerHTML = `<td>${esc(q.name)}</td><td class="waiting">${Number(q.waiting)}</td>` +
        `<td>${q.longestWaitStart ? `<span class="timer" data-since="${Number(q.longestWaitStart)}"></span>` : "–"}</td>` +
        `<td class="sl">${Math.round(Number(q.serviceLevelPct))}%</td><td>${Number(q.staffed)}</td><td>${Number(q.ready)}</td>` +
        `<td>${Number(q.offered)}</td><td>${Number(q.answered)}</td><td>${Number(q.abandoned)}</td>`;
      tbody.appendChild(tr);
    }
    $("#queues").hidden = list.length === 0;
    tick();
  }

  $("#team").onchange = render;
  $("#sort").onchange = render;
  $("#login").onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem("ctibroker.token", $("#token").value.trim());
    $("#login").hidden = true;
    if (ws) ws.close();
  };
  setInterval(tick, 1000);
  connect();
})();
