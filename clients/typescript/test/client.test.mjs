// The client against a real broker (the ctibroker binary in CTIBROKER_BIN,
// started here with its simulated switch).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
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

before(async () => {
  const bin = process.env.CTIBROKER_BIN;
  assert.ok(bin, "CTIBROKER_BIN names the broker binary");
  const port = await freePort();
  base = `127.0.0.1:${port}`;
  // The broker refuses configuration keys it does not know: none of ours.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CTIBROKER_")));
  broker = spawn(bin, ["serve"], { env: { ...env, CTIBROKER_LISTEN: base, CTIBROKER_LOG__LEVEL: "error" }, stdio: "inherit" });
  const end = Date.now() + 15000;
  for (;;) {
    try {
      if ((await fetch(`http://${base}/healthz`)).ok) break;
    } catch {}
    if (Date.now() > end) throw new Error("the broker did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(() => broker?.kill());

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

test("every command of the broker has its type", () => {
  for (const name of ["channel.ready", "interaction.accept", "supervisor.subscribe", "session.logout"]) {
    assert.ok(name in commands, name);
  }
});
