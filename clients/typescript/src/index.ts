// @ctibroker/client: the agent's (and supervisor's) side of ctibroker's
// WebSocket protocol, for browsers and Node (>= 20).
import { closeCodes, commands, failureCodes } from "./protocol.js";
import type { CommandName, EventData, EventName, FailureCode, Interaction } from "./protocol.js";

export * from "./protocol.js";

/** A failure reply's `failure`. */
export interface Failure {
  code: FailureCode;
  message: string;
  context?: string;
}

/** A command's reply. */
export interface Reply<D = unknown> {
  command: CommandName;
  target: string;
  requestId?: string;
  result: "success" | "failure";
  data?: D;
  failure?: Failure;
}

/** An event the broker sent; its data typed by its name (EventData). */
export type BrokerEvent<N extends EventName = EventName> = {
  [K in N]: {
    messageType: "objectEvent";
    name: K;
    target: string;
    seq?: number;
    timestamp: number;
    data: EventData[K];
  };
}[N];

/** A command that failed: its failure, typed, and whether it was transient. */
export class CommandError extends Error {
  readonly code: FailureCode;
  readonly transient: boolean;
  constructor(readonly command: string, readonly failure: Failure) {
    super(`${command}: ${failure.code}: ${failure.message}`);
    this.code = failure.code;
    this.transient = failureCodes[failure.code]?.transient ?? false;
  }
}

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** What the client knows of a channel, kept current from events. */
export interface Channel {
  id: string;
  name: string;
  type: string;
  /** INACTIVE, ACTIVE, UNAVAILABLE. */
  state: string;
  /** ready, not_ready, after_call_work, busy_ready, ... */
  status: string;
  reasonCode: string;
  reasonName: string;
  interactions: Map<string, Interaction>;
}

/** What a supervisor subscribes to (lists AND-ed; empty: all it may see). */
export interface SubscribeFilter {
  teams?: string[];
  agents?: string[];
  channelTypes?: string[];
  statuses?: string[];
  format?: "full" | "compact";
  /** Queue figures too: these queues, or [] for every queue it may see. */
  queues?: string[];
}

export interface SessionInfo {
  id: string;
  agentId: string;
  teams: string[];
}

/** Something like the browser's WebSocket (Node 20: pass the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketFactory = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  /** The broker's WebSocket URL, e.g. wss://cti.example/v1/ws. */
  url: string;
  /** auth.mode none: who to be (?agent=, ?supervisor=). */
  agent?: string;
  supervisor?: string;
  /** auth.mode jwt: the token, or a function giving a fresh one (called
   * at every connection, and when the broker says the token expired). */
  token?: string | (() => string | Promise<string>);
  /** The WebSocket implementation (default: the global one). */
  WebSocket?: WebSocketFactory;
  /** Reconnect backoff: from minDelayMs doubling to maxDelayMs, with jitter. */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** Transient failures are retried this many times (same requestId). */
  retries?: number;
  /** Each command's deadline. */
  timeoutMs?: number;
  /** With a token function: reconnect with a fresh token this long before
   * the current one's exp (default 30 s), so that the broker never closes
   * the connection with 4401. */
  refreshBeforeExpMs?: number;
}

type Listener<T> = (v: T) => void;

/**
 * A connection to ctibroker that stays connected: it reconnects with
 * backoff and jitter and resumes with since=<last seq>, keeps a live model
 * of the session (channels, interactions) from the events, and gives a
 * promise per command.
 */
export class Client {
  state: ConnectionState = "closed";
  session: SessionInfo | null = null;
  readonly channels = new Map<string, Channel>();

  private ws: WebSocketLike | null = null;
  private lastSeq = 0;
  private attempt = 0;
  private stopped = true;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private nextId = 0;
  private pending = new Map<string, { resolve: (r: Reply) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> }>();
  private listeners = { state: new Set<Listener<ConnectionState>>(), change: new Set<Listener<Client>>(), event: new Set<Listener<BrokerEvent>>() };
  private ready: Promise<void>;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshing = false;
  private markReady: () => void = () => {};

  constructor(private readonly opts: ClientOptions) {
    this.ready = new Promise((r) => (this.markReady = r));
  }

  /** Connects, and keeps connecting until close(). Resolves once the session is initialized. */
  connect(): Promise<void> {
    this.stopped = false;
    void this.open();
    return this.ready;
  }

  /** Closes for good (no reconnect); pending commands fail. */
  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.ws?.close(1000, "client closed");
    this.setState("closed");
    this.failPending(new Error("client closed"));
  }

  on(what: "state", f: Listener<ConnectionState>): () => void;
  on(what: "change", f: Listener<Client>): () => void;
  on(what: "event", f: Listener<BrokerEvent>): () => void;
  on(what: keyof Client["listeners"], f: Listener<any>): () => void {
    this.listeners[what].add(f);
    return () => this.listeners[what].delete(f);
  }

  /**
   * Sends a command and resolves with its success reply; rejects with a
   * CommandError. A transient failure is retried (backoff, the same
   * requestId: the broker applies it once) up to `retries` times.
   */
  async command<D = unknown>(name: CommandName, target: string, data?: unknown): Promise<Reply<D>> {
    if (!(name in commands)) throw new Error(`unknown command ${name}`);
    const requestId = `r${Date.now().toString(36)}-${++this.nextId}`;
    for (let attempt = 0; ; attempt++) {
      await this.ready;
      const reply = (await this.send({ command: name, target, data, requestId })) as Reply<D>;
      if (reply.result === "success") return reply;
      const err = new CommandError(name, reply.failure!);
      if (!err.transient || attempt >= (this.opts.retries ?? 3)) throw err;
      await sleep(this.backoff(attempt));
    }
  }

  /** The commands of one of the session's channels. */
  channel(id: string) {
    const t = () => `${this.sid()}.${id}`;
    return {
      activate: (queues?: string[]) => this.command("channel.activate", t(), queues?.length ? { channeloptions: { queue: queues } } : undefined),
      deactivate: (logoutReason?: string) => this.command("channel.deactivate", t(), logoutReason ? { channelOptions: { reason: logoutReason } } : undefined),
      ready: () => this.command("channel.ready", t()),
      notReady: (reasoncode: string) => this.command("channel.notready", t(), { reasoncode }),
      dial: (destination: string, data?: Record<string, string>) => this.command<{ interactionId: string }>("channel.dial", t(), { destination, data }),
      dispositions: () => this.command("channel.request.externaldispositions", t()),
    };
  }

  /** The commands of one interaction. */
  interaction(channel: string, id: string) {
    const t = () => `${this.sid()}.${channel}.${id}`;
    return {
      accept: () => this.command("interaction.accept", t()),
      reject: () => this.command("interaction.reject", t()),
      hold: () => this.command("interaction.hold", t()),
      retrieve: () => this.command("interaction.retrieve", t()),
      release: () => this.command("interaction.release", t()),
      blindTransfer: (destination: string) => this.command("interaction.blindtransfer", t(), { destination }),
      consult: (destination: string) => this.command("interaction.consult", t(), { destination }),
      consultTransfer: () => this.command("interaction.consulttransfer", t()),
      consultConference: () => this.command("interaction.consultconference", t()),
      sendDTMF: (digits: string) => this.command("interaction.senddtmf", t(), { digits }),
      setData: (data: Record<string, string>) => this.command("interaction.setdata", t(), { data }),
      complete: (disposition?: string) => this.command("interaction.complete", t(), disposition ? { disposition } : undefined),
    };
  }

  /** A supervisor's commands (its own session is the target). */
  get supervisor() {
    const t = () => this.sid();
    return {
      /** Starts a live view: a supervisor.snapshot event, then supervisor.agent.changed (and
       * supervisor.queue.changed with queues). Resolves with the subscription's id. */
      subscribe: async (filter: SubscribeFilter = {}) =>
        (await this.command<{ subscriptionId: string }>("supervisor.subscribe", t(), filter)).data!.subscriptionId,
      unsubscribe: (subscriptionId: string) => this.command("supervisor.unsubscribe", t(), { subscriptionId }),
      setState: (agentId: string, status: "ready" | "not_ready", opts: { reasoncode?: string; channel?: string } = {}) =>
        this.command("supervisor.agent.setstate", t(), { agentId, status, ...opts }),
      logout: (agentId: string, opts: { reason?: string; channel?: string } = {}) =>
        this.command("supervisor.agent.logout", t(), { agentId, ...opts }),
    };
  }

  /** Adds a channel to the session (session.addchannel). */
  addChannel(id: string, name: string, type: string) {
    return this.command("session.addchannel", this.sid(), { channel: { id, name, type } });
  }

  private sid(): string {
    if (!this.session) throw new Error("not connected yet: await connect()");
    return this.session.id;
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const url = new URL(this.opts.url);
    if (this.opts.agent) url.searchParams.set("agent", this.opts.agent);
    if (this.opts.supervisor) url.searchParams.set("supervisor", this.opts.supervisor);
    if (this.lastSeq > 0) url.searchParams.set("since", String(this.lastSeq));
    const protocols = ["ctibroker.v1"];
    let token = this.opts.token;
    if (typeof token === "function") {
      token = await token();
      this.scheduleRefresh(token);
    }
    // The token travels as a subprotocol, never in the URL (logs, histories).
    if (token) protocols.push(`ctibroker.bearer.${token}`);
    const WS = this.opts.WebSocket ?? (globalThis as any).WebSocket;
    if (!WS) throw new Error("no WebSocket: pass options.WebSocket (the ws package in Node 20)");
    const ws: WebSocketLike = new WS(url.toString(), protocols);
    this.ws = ws;
    ws.onmessage = (ev) => this.receive(String(ev.data));
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending(new Error(`connection closed (${ev.code} ${ev.reason})`));
      const again = this.refreshing || ((closeCodes as Record<number, { reconnect: boolean }>)[ev.code]?.reconnect ?? true);
      if (this.refreshing) {
        // Our own close for a fresh token: reconnect at once, resuming.
        this.refreshing = false;
        this.setState("reconnecting");
        void this.open();
        return;
      }
      if (this.stopped || !again) {
        this.setState("closed");
        return;
      }
      this.setState("reconnecting");
      this.timer = setTimeout(() => void this.open(), this.backoff(this.attempt++));
    };
  }

  /** Plans a reconnect with a fresh token before this one expires. */
  private scheduleRefresh(token: string): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    const exp = jwtExp(token);
    if (!exp) return;
    const wait = exp * 1000 - (this.opts.refreshBeforeExpMs ?? 30_000) - Date.now();
    this.refreshTimer = setTimeout(() => {
      if (this.stopped || !this.ws) return;
      this.refreshing = true;
      this.ws.close(1000, "token refresh");
    }, Math.max(wait, 0));
  }

  private backoff(attempt: number): number {
    const min = this.opts.minDelayMs ?? 250, max = this.opts.maxDelayMs ?? 10_000;
    const d = Math.min(max, min * 2 ** Math.min(attempt, 20));
    return d / 2 + Math.random() * (d / 2); // full jitter on half: a floor of desktops does not reconnect at once
  }

  private send(msg: Record<string, unknown>): Promise<Reply> {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== 1) {
        resolve({ command: msg.command as CommandName, target: msg.target as string, result: "failure",
          failure: { code: "UNAVAILABLE", message: "not connected" } });
        return;
      }
      const id = msg.requestId as string;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${msg.command}: no reply within ${this.opts.timeoutMs ?? 15_000} ms`));
      }, this.opts.timeoutMs ?? 15_000);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify(msg));
    });
  }

  private failPending(err: Error): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      // A command in flight when the connection dropped: answered as
      // transient, so command() retries it with the same requestId.
      p.resolve({ command: "channel.ready", target: "", requestId: id, result: "failure", failure: { code: "UNAVAILABLE", message: err.message } });
    }
    this.pending.clear();
  }

  private receive(frame: string): void {
    let msg: any;
    try {
      msg = JSON.parse(frame);
    } catch {
      return;
    }
    for (const m of Array.isArray(msg) ? msg : [msg]) {
      if (m.result !== undefined) {
        const p = this.pending.get(m.requestId);
        if (p) {
          clearTimeout(p.timer);
          this.pending.delete(m.requestId);
          p.resolve(m);
        }
        continue;
      }
      if (m.messageType === "objectEvent") this.apply(m as BrokerEvent);
    }
  }

  /** Updates the model from an event. */
  private apply(ev: BrokerEvent): void {
    if (typeof ev.seq === "number") this.lastSeq = Math.max(this.lastSeq, ev.seq);
    const d: any = ev.data ?? {}; // narrowed per case below by the event's name
    switch (ev.name) {
      case "session.initialized":
        if (!d.resumed || this.session?.id !== d.sessionId) {
          // A new session (or the state replayed whole): it replaces the model.
          this.channels.clear();
        }
        this.session = { id: d.sessionId, agentId: d.agentId, teams: d.teams ?? [] };
        this.lastSeq = Math.max(this.lastSeq, d.seq ?? 0);
        this.attempt = 0;
        this.setState("open");
        this.markReady();
        break;
      case "channel.created": {
        const c = d.channel;
        if (!this.channels.has(c.id)) {
          this.channels.set(c.id, { id: c.id, name: c.name, type: c.type, state: "INACTIVE", status: "not_ready", reasonCode: "", reasonName: "", interactions: new Map() });
        }
        break;
      }
      case "channel.removed":
        this.channels.delete(d.channel?.id ?? lastPart(ev.target));
        break;
      case "channel.infochanged": {
        const c = this.channels.get(lastPart(ev.target));
        if (c) {
          c.state = d.state;
          c.status = d.agentStatus?.status ?? c.status;
          c.reasonCode = d.agentStatus?.lastReasonCode ?? "";
          c.reasonName = d.agentStatus?.lastReasonName ?? "";
        }
        break;
      }
      case "interaction.created":
      case "interaction.infochanged":
      case "interaction.datachanged":
      case "interaction.ended": {
        const ix = d.interaction as Interaction;
        this.channels.get(ix?.channel)?.interactions.set(ix.id, ix);
        break;
      }
      case "interaction.completed": {
        const ix = d.interaction as Interaction;
        this.channels.get(ix?.channel)?.interactions.delete(ix.id);
        break;
      }
      case "session.ended":
        this.session = null;
        this.channels.clear();
        break;
    }
    for (const f of this.listeners.event) f(ev);
    for (const f of this.listeners.change) f(this);
  }

  private setState(s: ConnectionState): void {
    if (this.state === s) return;
    this.state = s;
    if (s === "reconnecting" || s === "closed") this.ready = new Promise((r) => (this.markReady = r));
    for (const f of this.listeners.state) f(s);
  }
}

/** A JWT's exp claim (seconds), or 0. */
function jwtExp(token: string): number {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = typeof atob === "function" ? atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")) : "";
    return Number(JSON.parse(json).exp) || 0;
  } catch {
    return 0;
  }
}

function lastPart(target: string): string {
  const parts = target.split(".");
  return parts[parts.length - 1];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
