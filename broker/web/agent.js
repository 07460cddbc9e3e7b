// ctibroker agent desktop: a softphone bar on @ctibroker/client (the
// library's build is embedded beside this page, in lib/).
import { Client } from "/static/lib/index.js";

const $ = (s, root = document) => root.querySelector(s);
const params = new URLSearchParams(location.search);
// A token in the URL is kept in this tab only and taken out of the address
// bar at once; it reaches the broker as a WebSocket subprotocol.
if (params.has("token")) {
  sessionStorage.setItem("ctibroker.agent.token", params.get("token"));
  params.delete("token");
  history.replaceState(null, "", location.pathname + (params.size ? "?" + params : ""));
}
const token = () => sessionStorage.getItem("ctibroker.agent.token") || "";
const CH = "phone";

// Plain words, not state-machine names.
const statusWords = {
  ready: "Ready", not_ready: "Not ready", after_call_work: "Wrap-up",
  busy_ready: "On a call", busy_not_ready: "On a call", busy_after_call_work: "On a call",
};
const callWords = { ALERTING: "Ringing", DIALING: "Dialing", STARTED: "Talking", HELD: "On hold", ENDED: "Wrap-up", COMPLETED: "Done" };
const statusClass = (s) => (s?.startsWith("busy_") ? "oncall" : s === "after_call_work" ? "wrapup" : s);

const client = new Client({
  url: (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws",
  agent: params.get("agent") || undefined,
  token: token() ? () => token() : undefined,
});
let reasons = [], logoutReasons = [], dispositions = [];
let shownStatus = "", statusSince = Date.now();

function showError(e) {
  $("#error").textContent = e ? e.message || String(e) : "";
}
const act = (p) => p.then(() => showError(null), showError);

client.on("state", (s) => {
  const words = { connecting: "Connecting…", open: "Connected", reconnecting: "Reconnecting…", closed: "Disconnected" };
  $("#conn").textContent = words[s];
  $("#conn").classList.toggle("down", s !== "open");
});

const label = (labels, fallback) => (labels && labels[0] && labels[0].name) || fallback;
client.on("event", (ev) => {
  switch (ev.name) {
    case "session.externalnotreadyreasons.updated":
      reasons = (ev.data.reasonCodes || []).filter((r) => r.selectable);
      fill($("#reason"), reasons.map((r) => [r.reasonCodeId, label(r.labels, r.reasonCodeId)]));
      break;
    case "session.externallogoutreasons.updated":
      logoutReasons = ev.data.logoutReasons || [];
      fill($("#logout-reason"), [["", "None"], ...logoutReasons.map((r) => [r.logoutReasonId, label(r.labels, r.logoutReasonId)])]);
      break;
    case "channel.externaldispositions.updated":
      dispositions = ev.data.dispositions || [];
      for (const sel of document.querySelectorAll("select.disposition")) fillDispositions(sel);
      break;
  }
});
client.on("change", render);

function fill(select, options) {
  const cur = select.value;
  select.innerHTML = "";
  for (const [value, text] of options) select.add(new Option(text, value));
  if ([...select.options].some((o) => o.value === cur)) select.value = cur;
}
function fillDispositions(sel) {
  fill(sel, [["", "Choose a disposition"], ...dispositions.map((d) => [d.code, d.name || d.code])]);
}

function render() {
  const phone = client.channels.get(CH);
  const active = phone && phone.state === "ACTIVE";
  $("#who").textContent = client.session ? client.session.agentId : "";
  $("#login").hidden = active;
  $("#logout").hidden = $("#availability").hidden = $("#dial").hidden = !active;
  const status = active ? phone.status : "";
  if (status !== shownStatus) {
    shownStatus = status;
    statusSince = Date.now();
  }
  const st = $("#status");
  st.textContent = active ? statusWords[status] || status : "Logged out";
  st.className = "status " + (active ? statusClass(status) : "");
  renderCalls(phone);
  tick();
}

function renderCalls(phone) {
  const list = $("#calls");
  const ixs = phone ? [...phone.interactions.values()] : [];
  for (const li of [...list.children]) if (!ixs.some((ix) => ix.id === li.dataset.ix)) li.remove();
  for (const ix of ixs) {
    let li = list.querySelector(`li[data-ix="${CSS.escape(ix.id)}"]`);
    if (!li) {
      li = callItem(ix);
      list.appendChild(li);
    }
    updateCall(li, ix, ixs);
  }
  $("#no-calls").hidden = ixs.length > 0;
}

// callItem builds a call's card once; updateCall shows what its state allows.
function callItem(ix) {
  const li = document.createElement("li");
  li.className = "call";
  li.dataset.ix = ix.id;
  li.innerHTML = `<div><span class="state"></span> <span class="direction"></span></div>
    <dl><dt>Caller</dt><dd class="caller"></dd><dt>Queue</dt><dd class="queue"></dd><dt>Data</dt><dd class="data"></dd></dl>
    <div class="actions">
      <button data-act="accept">Accept</button><button data-act="reject">Reject</button>
      <button data-act="hold">Hold</button><button data-act="retrieve">Retrieve</button>
      <button data-act="release">Hang up</button>
      <label class="when-talking">Transfer or consult to <input class="dest" placeholder="agent or queue" autocomplete="off"></label>
      <button data-act="blindTransfer">Transfer</button><button data-act="consult">Consult</button>
      <button data-act="consultTransfer">Complete transfer</button><button data-act="consultConference">Conference</button>
      <label class="when-talking">Keypad <input class="digits" inputmode="numeric" autocomplete="off" size="8"></label>
      <button data-act="sendDTMF">Send tones</button>
      <label class="when-wrapup">Disposition <select class="disposition"></select></label>
      <button data-act="complete">Complete</button>
    </div>`;
  fillDispositions($("select.disposition", li));
  for (const b of li.querySelectorAll("button[data-act]")) {
    b.onclick = () => {
      const ix = client.interaction(CH, li.dataset.ix);
      const a = b.dataset.act;
      if (a === "blindTransfer" || a === "consult") return act(ix[a]($(".dest", li).value.trim()));
      if (a === "sendDTMF") return act(ix.sendDTMF($(".digits", li).value.trim()).then(() => ($(".digits", li).value = "")));
      if (a === "complete") return act(ix.complete($(".disposition", li).value || undefined));
      return act(ix[a]());
    };
  }
  return li;
}

function updateCall(li, ix, all) {
  const s = ix.state;
  li.classList.toggle("ringing", s === "ALERTING");
  $(".state", li).textContent = callWords[s] || s;
  $(".direction", li).textContent = ix.direction === "outbound" ? "outgoing" : "incoming";
  $(".caller", li).textContent = (ix.direction === "outbound" ? ix.to : ix.from) || "unknown";
  $(".queue", li).textContent = ix.queue || "–";
  $(".data", li).textContent = Object.entries(ix.data || {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "–";
  const consulting = all.some((o) => o.parent === ix.id && o.state === "STARTED");
  const show = {
    accept: s === "ALERTING", reject: s === "ALERTING" && ix.direction !== "outbound",
    hold: s === "STARTED", retrieve: s === "HELD", release: ["STARTED", "HELD", "DIALING"].includes(s),
    blindTransfer: s === "STARTED", consult: s === "STARTED", sendDTMF: s === "STARTED",
    consultTransfer: s === "HELD" && consulting, consultConference: s === "HELD" && consulting,
    complete: s === "ENDED",
  };
  for (const b of li.querySelectorAll("button[data-act]")) b.hidden = !show[b.dataset.act];
  for (const l of li.querySelectorAll(".when-talking")) l.hidden = s !== "STARTED";
  for (const l of li.querySelectorAll(".when-wrapup")) l.hidden = s !== "ENDED";
}

function tick() {
  const s = Math.max(0, Math.floor((Date.now() - statusSince) / 1000));
  const mm = String(Math.floor(s / 60) % 60).padStart(2, "0"), ss = String(s % 60).padStart(2, "0");
  $("#timer").textContent = shownStatus ? `${Math.floor(s / 3600) ? Math.floor(s / 3600) + ":" : ""}${mm}:${ss}` : "";
}
setInterval(tick, 1000);

$("#login").onsubmit = (e) => {
  e.preventDefault();
  const queues = $("#queues").value.split(",").map((q) => q.trim()).filter(Boolean);
  act((async () => {
    if (!client.channels.has(CH)) await client.addChannel(CH, $("#ext").value.trim(), "TELEPHONY");
    await client.channel(CH).activate(queues);
    await client.channel(CH).dispositions();
  })());
};
$("#logout").onsubmit = (e) => {
  e.preventDefault();
  act(client.channel(CH).deactivate($("#logout-reason").value || undefined));
};
$("#btn-ready").onclick = () => act(client.channel(CH).ready());
$("#btn-notready").onclick = () => act(client.channel(CH).notReady($("#reason").value));
$("#dial").onsubmit = (e) => {
  e.preventDefault();
  act(client.channel(CH).dial($("#destination").value.trim()));
};
$("#login-token").onsubmit = (e) => {
  e.preventDefault();
  sessionStorage.setItem("ctibroker.agent.token", $("#token").value.trim());
  location.reload();
};

(async () => {
  if (!params.get("agent") && !token()) {
    // auth.mode jwt: ask for a token; with none, ?agent=<id> says who to be.
    const probe = await fetch("/v1/sessions/my").catch(() => null);
    if (probe && probe.status === 401) {
      $("#login-token").hidden = false;
      return;
    }
  }
  await client.connect();
  render();
  await Promise.all([
    client.command("session.request.externalnotreadyreasons", client.session.id),
    client.command("session.request.externallogoutreasons", client.session.id),
  ]).catch(showError);
  if (client.channels.get(CH)?.state === "ACTIVE") client.channel(CH).dispositions().catch(showError);
})();
