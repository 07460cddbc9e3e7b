// A ctibroker CTI adapter in Node: an in-memory "switch" served over the
// adapter protocol (../../adapters/remote/v1/adapter.proto). It is what a
// real adapter looks like around a vendor's SDK: replace the switch object
// with calls to yours.
//
//   node adapter.js --listen 127.0.0.1:7070
//   ctibroker adapter check --addr 127.0.0.1:7070
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO = path.join(__dirname, "..", "..", "adapters", "remote", "v1", "adapter.proto");
const def = protoLoader.loadSync(PROTO, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
const v1 = grpc.loadPackageDefinition(def).ctibroker.adapter.v1;

const listen = process.argv.includes("--listen") ? process.argv[process.argv.indexOf("--listen") + 1] : "127.0.0.1:7070";

// The switch: who is logged in where, and the calls in progress.
const logins = new Map(); // agent -> Map(channel id -> login)
const calls = new Map(); // interaction id -> {agent, channel, ix}
let seq = 0;
const notReadyReasons = [{ reasonCodeId: "1", reasonCodeCode: "break", selectable: true, extensions: [], labels: [{ lang: "en", label: "Break" }] }];
const logoutReasons = [{ logoutReasonId: "1", logoutReasonCode: "eod", extensions: [], labels: [{ lang: "en", label: "End of day" }] }];
const dispositions = [{ code: "done", name: "Done" }];

// The protocol's promises: an agent's events go to the node that
// registered it last; events naming no agent go to every node.
const nodes = new Map(); // node id -> stream
const owners = new Map(); // agent -> node id

function send(node, msg) {
  const s = nodes.get(node);
  if (s) s.write(msg);
}

function emit(event) {
  if (event.agentId) send(owners.get(event.agentId), { event });
  else for (const node of nodes.keys()) send(node, { event });
}

const json = (v) => Buffer.from(JSON.stringify(v));
const fail = (code, details) => Object.assign(new Error(details), { code, details });
const refused = (details) => fail(grpc.status.ABORTED, details);

function login(ref) {
  return (logins.get(ref.agentId) || new Map()).get(ref.channel && ref.channel.id);
}

function interactionsOf(agent) {
  return [...calls.values()].filter((c) => c.agent === agent).map((c) => c.ix);
}

const handlers = {
  Connect(stream) {
    let node = "";
    stream.on("data", (m) => {
      if (node) return;
      const hello = m.hello;
      if (!hello || !hello.node) {
        stream.emit("error", fail(grpc.status.INVALID_ARGUMENT, "the first message must be a Hello"));
        return;
      }
      if (hello.version !== 1) {
        stream.emit("error", fail(grpc.status.FAILED_PRECONDITION, `protocol version ${hello.version}: this adapter speaks 1`));
        return;
      }
      node = hello.node;
      const old = nodes.get(node);
      if (old && old !== stream) old.end();
      nodes.set(node, stream);
      stream.write({ capabilities: { callControl: true, queues: false } });
      stream.write({ link: { up: true, reason: "" } });
    });
    const gone = () => {
      if (node && nodes.get(node) === stream) nodes.delete(node);
    };
    stream.on("end", () => { gone(); stream.end(); });
    stream.on("error", gone);
    stream.on("cancelled", gone);
  },

  RegisterAgent(call, cb) {
    const { agentId, node } = call.request;
    if (!agentId || !node) return cb(fail(grpc.status.INVALID_ARGUMENT, "agent_id and node are required"));
    owners.set(agentId, node);
    const ls = [...(logins.get(agentId) || new Map()).values()];
    cb(null, { logins: ls, interactionsJson: json(interactionsOf(agentId)) });
  },

  Activate(call, cb) {
    const { channel, queues } = call.request;
    if (!logins.has(channel.agentId)) logins.set(channel.agentId, new Map());
    logins.get(channel.agentId).set(channel.channel.id, {
      groupId: channel.groupId, groupName: channel.groupId, channel: channel.channel,
      state: "ACTIVE", status: "not_ready", reasonCode: "", queues,
    });
    cb(null, {});
  },

  Deactivate(call, cb) {
    const { channel } = call.request;
    const ls = logins.get(channel.agentId);
    if (ls) ls.delete(channel.channel.id);
    cb(null, {});
  },

  SetReady(call, cb) {
    const l = login(call.request.channel);
    if (!l) return cb(refused("the channel is not logged in"));
    Object.assign(l, { status: "ready", reasonCode: "" });
    cb(null, {});
  },

  SetNotReady(call, cb) {
    const l = login(call.request.channel);
    if (!l) return cb(refused("the channel is not logged in"));
    const code = call.request.reasonCode;
    if (code !== "acw" && !notReadyReasons.some((r) => r.reasonCodeCode === code)) return cb(refused(`unknown reason ${code}`));
    Object.assign(l, { status: code === "acw" ? "after_call_work" : "not_ready", reasonCode: code });
    cb(null, {});
  },

  Teams(call, cb) {
    cb(null, { teams: [] });
  },

  Document(call, cb) {
    const docs = {
      DOCUMENT_KIND_NOT_READY_REASONS: () => notReadyReasons,
      DOCUMENT_KIND_LOGOUT_REASONS: () => logoutReasons,
      DOCUMENT_KIND_ADDRESS_BOOK: () => ({ addressBooks: [] }),
      DOCUMENT_KIND_DISPOSITIONS: () => dispositions,
      DOCUMENT_KIND_INTERACTIONS: () => interactionsOf(call.request.agentId),
    };
    const doc = docs[call.request.kind];
    if (!doc) return cb(fail(grpc.status.INVALID_ARGUMENT, `unknown document kind ${call.request.kind}`));
    cb(null, { json: json(doc()) });
  },

  Dial(call, cb) {
    const { channel, destination, data } = call.request;
    const l = login(channel);
    if (!l) return cb(refused("the channel is not logged in"));
    const id = `node-${++seq}`;
    const now = Date.now();
    const ix = {
      id, channel: channel.channel.id, mediaType: channel.channel.type, direction: "outbound", state: "DIALING",
      from: channel.channel.name, to: destination, data: data || {}, created: now,
      members: [{ id: "remote", role: "caller", address: destination, state: "ringing" }],
    };
    calls.set(id, { agent: channel.agentId, channel: channel.channel.id, ix });
    cb(null, { interactionId: id });
    // The far end answers after a moment: the switch says so.
    setTimeout(() => {
      const c = calls.get(id);
      if (!c) return;
      c.ix.state = "STARTED";
      c.ix.members[0].state = "connected";
      emit({ kind: "interaction.change", agentId: c.agent, channelId: c.channel, interactionId: id, interactionJson: json(c.ix) });
    }, 100);
  },

  Control(call, cb) {
    const { channel, interactionId, action } = call.request;
    const actions = ["ACTION_ACCEPT", "ACTION_REJECT", "ACTION_HOLD", "ACTION_RETRIEVE", "ACTION_RELEASE", "ACTION_BLIND_TRANSFER",
      "ACTION_CONSULT", "ACTION_CONSULT_TRANSFER", "ACTION_CONSULT_CONFERENCE", "ACTION_SEND_DTMF", "ACTION_SET_DATA", "ACTION_COMPLETE"];
    if (!actions.includes(action)) return cb(fail(grpc.status.INVALID_ARGUMENT, `unknown action ${action}`));
    if (action === "ACTION_COMPLETE") return cb(null, {});
    const c = calls.get(interactionId);
    if (!c || c.agent !== channel.agentId) return cb(refused(`no interaction ${interactionId} on this channel`));
    switch (action) {
      case "ACTION_HOLD": c.ix.state = "HELD"; break;
      case "ACTION_RETRIEVE": c.ix.state = "STARTED"; break;
      case "ACTION_RELEASE": case "ACTION_REJECT": calls.delete(interactionId); break;
      case "ACTION_ACCEPT": c.ix.state = "STARTED"; break;
      default: return cb(fail(grpc.status.UNIMPLEMENTED, `${action} is not supported by this example`));
    }
    cb(null, {});
  },
};

const server = new grpc.Server();
server.addService(v1.Adapter.service, handlers);
server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(err.message);
    process.exit(1);
  }
  console.log(`adapter listening on ${listen.replace(/:\d+$/, ":" + port)}`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.tryShutdown(() => process.exit(0)));
