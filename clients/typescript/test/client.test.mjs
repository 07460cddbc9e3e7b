// The client against a real broker (the ctibroker binary in CTIBROKER_BIN,
// started here with its simulated switch).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { createHmac } from "node:crypto";
import WebSocket from "ws";
import { Client, CommandError, commands } from "../dist/index.js";

let broker, base;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function until(what, cond, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const brokers = [];

// startBroker runs the broker binary with extra configuration and returns
// its host:port once it answers.
async function startBroker(extra = {}) {
  const bin = process.env.CTIBROKER_BIN;
  assert.ok(bin, "CTIBROKER_BIN names the broker binary");
  const addr = `127.0.0.1:${await freePort()}`;
  // The broker refuses configuration keys it does not know: none of ours.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CTIBROKER_")));
  brokers.push(spawn(bin, ["serve"], { env: { ...env, CTIBROKER_LISTEN: addr, CTIBROKER_LOG__LEVEL: "error", ...extra }, stdio: "inherit" }));
  const end = Date.now() + 15000;
  for (;;) {
    try {
      if ((await fetch(`http://${addr}/healthz`)).ok) return addr;
    } catch {}
    if (Date.now() > end) throw new Error("the broker did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  base = await startBroker();
});

after(() => brokers.forEach((b) => b.kill()));

function agent(name) {
  return new Client({ url: `ws://${base}/v1/ws`, agent: name, WebSocket, minDelayMs: 50, maxDelayMs: 500 });
}

async function sim(path, body) {
  const res = await fetch(`http://${base}${path}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  assert.equal(res.status, 202, `${path}: ${res.status}`);
  return res.json();
}

test("an agent's day: channels, statuses and a call, from the live model", async () => {
  const c = agent("ts-alice");
  const states = [];
  c.on("state", (s) => states.push(s));
  await c.connect();
  assert.equal(c.state, "open");
  assert.ok(c.session.id);
  let changes = 0;
  c.on("change", () => changes++);
  await c.addChannel("phone", "2001", "TELEPHONY");
  await c.channel("phone").activate(["sales"]);
  await c.channel("phone").ready();
  await until("ready in the model", () => c.channels.get("phone")?.status === "ready");
  assert.ok(changes > 0, "change callbacks fired");

  // A typed failure: an unknown reason is not transient.
  await assert.rejects(c.channel("phone").notReady("no-such-reason"), (err) => {
    assert.ok(err instanceof CommandError);
    assert.equal(err.code, "INVALID_REASON");
    assert.equal(err.transient, false);
    return true;
  });

  const { interaction } = await sim("/v1/sim/calls", { queue: "sales", from: "+15550142" });
  await until("the offer", () => c.channels.get("phone").interactions.get(interaction)?.state === "ALERTING");
  const ix = c.interaction("phone", interaction);
  await ix.accept();
  await until("talking", () => c.channels.get("phone").interactions.get(interaction)?.state === "STARTED");
  await ix.hold();
  await until("held", () => c.channels.get("phone").interactions.get(interaction)?.state === "HELD");
  await ix.retrieve();
  await ix.release();
  await until("the call gone from the model", () => !c.channels.get("phone").interactions.has(interaction));
  assert.deepEqual(states.slice(0, 2), ["connecting", "open"]);
  c.close();
});

test("a dropped connection reconnects and resumes with since=", async () => {
  const c = agent("ts-bob");
  await c.connect();
  await c.addChannel("phone", "2002", "TELEPHONY");
  await c.channel("phone").activate();
  await c.channel("phone").ready();
  const sid = c.session.id;
  const seen = [];
  c.on("state", (s) => seen.push(s));
  c["ws"]._socket.destroy(); // the network drops (no close frame)
  await until("reconnected", () => seen.includes("reconnecting") && c.state === "open");
  assert.equal(c.session.id, sid, "the same session");
  assert.equal(c.channels.get("phone").status, "ready", "the model survived");
  await c.channel("phone").notReady("lunch");
  await until("not ready", () => c.channels.get("phone").status === "not_ready");
  c.close();
});

test("a supervisor watches agents and queues live", async () => {
  const sv = new Client({ url: `ws://${base}/v1/ws`, supervisor: "ts-vicky", WebSocket, minDelayMs: 50 });
  const events = [];
  sv.on("event", (ev) => events.push(ev));
  await sv.connect();
  const id = await sv.supervisor.subscribe({ queues: [] });
  await until("the snapshot", () => events.some((e) => e.name === "supervisor.snapshot" && e.data.subscriptionId === id));
  const snap = events.find((e) => e.name === "supervisor.snapshot");
  assert.ok(Array.isArray(snap.data.queues) && snap.data.queues.some((q) => q.name === "sales"), "queue figures in the snapshot");
  const dave = agent("ts-dave");
  await dave.connect();
  await dave.addChannel("phone", "2004", "TELEPHONY");
  await dave.channel("phone").activate();
  await until("dave in the live view", () =>
    events.some((e) => e.name === "supervisor.agent.changed" && e.data.agentId === "ts-dave" && e.data.current?.status === "not_ready"));
  await sv.supervisor.setState("ts-dave", "ready");
  await until("dave set ready by the supervisor", () => dave.channels.get("phone")?.status === "ready");
  dave.close();
  sv.close();
});

test("every command of the broker has its type", () => {
  for (const name of ["channel.ready", "interaction.accept", "supervisor.subscribe", "session.logout"]) {
    assert.ok(name in commands, name);
  }
});

const SECRET = "a-test-secret-of-at-least-32-bytes!!";
function mint(sub, ttlSeconds) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub, role: "agent", teams: ["sales"], exp: Math.floor(Date.now() / 1000) + ttlSeconds });
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

test("a token function refreshes the connection before the token expires", async () => {
  const addr = await startBroker({ CTIBROKER_AUTH__MODE: "jwt", CTIBROKER_AUTH__JWT__SECRET: SECRET });
  let minted = 0;
  const mintedAt = [];
  const c = new Client({ url: `ws://${addr}/v1/ws`, WebSocket, minDelayMs: 50, refreshBeforeExpMs: 2500,
    token: () => (minted++, mintedAt.push(Date.now()), mint("ts-carol", 4)) });
  const states = [];
  c.on("state", (s) => states.push(s));
  await c.connect();
  const sid = c.session.id;
  await c.addChannel("phone", "2003", "TELEPHONY");
  await until("a fresh token", () => minted >= 2 && c.state === "open", 8000);
  assert.equal(c.session.id, sid, "the same session, resumed");
  // Before the first token expired (4 s), not after a 4401.
  assert.ok(mintedAt[1] - mintedAt[0] < 3000, `refreshed after ${mintedAt[1] - mintedAt[0]} ms`);
  assert.ok(!states.includes("closed"), `never closed: ${states}`);
  await c.channel("phone").activate(); // works with the fresh token
  c.close();
});
