// Compiled (not run) by npm test: the events' data are typed by their names.
import { Client } from "../src/index.js";
import type { BrokerEvent, FailureCode } from "../src/index.js";

declare const client: Client;
client.on("event", (ev: BrokerEvent) => {
  if (ev.name === "state.updated") {
    const status: string = ev.data.channels[0].status;
    void status;
  }
  if (ev.name === "interaction.created") {
    const state: string | undefined = ev.data.interaction?.state;
    void state;
  }
  if (ev.name === "session.ctilink.changed") {
    const up: boolean = ev.data.up;
    void up;
  }
});
const code: FailureCode = "CTI_LINK_DOWN";
void code;
// @ts-expect-error: not a failure code of the broker
const wrong: FailureCode = "NO_SUCH_CODE";
void wrong;
