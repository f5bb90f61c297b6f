// The live side of a call on the console: call facts (id, transport, peer, live feed, latency), the
// transcript, the event log and the agent's voice level. Fed by the call session (peer state, remote
// audio) and by the LiveFeed (server events and status).

import { EventLog } from "./event-log.js";
import { LatencyTracker } from "./latency.js";
import { LiveFeed } from "./live-feed.js";
import { LevelMeter } from "./media.js";
import { TranscriptModel, TranscriptView } from "./transcript.js";

export class LiveView {
  constructor(root = document) {
    const $ = (selector) => root.querySelector(selector);
    this.facts = {
      callId: $("#call-id"),
      transport: $("#call-transport"),
      peer: $("#peer-state"),
      feed: $("#feed-state"),
      latency: $("#latency-median"),
      turns: $("#latency-count"),
    };
    this.meterBar = $("#agent-level");
    this.transcriptView = new TranscriptView($("#transcript"));
    this.events = new EventLog({ list: $("#event-log"), filter: $("#event-filter"), count: $("#event-count") });
    this.onServerEnd = () => {};
    this.reset();
  }

  /** Forget the previous call (a new launch). */
  reset({ transport = "" } = {}) {
    this.feed?.close();
    this.meter?.close();
    this.feed = null;
    this.meter = null;
    this.session = null;
    this.callId = null;
    this.transport = transport;
    this.maxRms = 0;
    this.serverStatus = null;
    this.model = new TranscriptModel();
    this.latency = new LatencyTracker();
    this.transcriptView.clear();
    this.events.clear();
    this.#fact("callId", "—");
    this.#fact("transport", transport || "—");
    this.#fact("peer", transport ? "new" : "—");
    this.#fact("feed", "—");
    this.#renderLatency();
    this.#level(0);
  }

  /** The call has an id: show it, follow its peer, open its live feed. */
  attach(session) {
    this.session = session;
    this.callId = session.callId;
    this.#fact("callId", session.callId);
    this.facts.callId.title = session.callId;
    session.pc.addEventListener("connectionstatechange", () => this.#fact("peer", session.pc.connectionState));
    this.#fact("peer", session.pc.connectionState);
    const feed = new LiveFeed(session.callId);
    this.feed = feed;
    feed.addEventListener("state", (e) => {
      this.#fact("feed", e.detail.state);
      if (e.detail.detail && this.feed === feed) session.log.log("Live feed", `${e.detail.state}: ${e.detail.detail}`);
    });
    feed.addEventListener("event", (e) => this.#onEvent(e.detail));
    feed.addEventListener("status", (e) => this.#onStatus(e.detail, session));
  }

  /** Measure the agent's voice (the remote audio stream). */
  watchRemote(stream) {
    this.meter?.close();
    this.meter = stream ? new LevelMeter(stream, { onLevel: (level) => this.#level(level) }) : null;
  }

  /** The call is over on our side: stop the meter, keep the transcript and the feed's last words. */
  stop() {
    if (this.meter) this.maxRms = Math.max(this.maxRms, this.meter.maxRms);
    this.meter?.close();
    this.meter = null;
    this.#level(0);
    // Let the final status and the last events arrive before closing the feed.
    const feed = this.feed;
    setTimeout(() => feed?.close(), 3000);
  }

  get maxRemoteRms() {
    return Math.max(this.maxRms, this.meter?.maxRms ?? 0);
  }

  #onEvent({ sequence, event, receivedAt }) {
    this.events.add({ sequence, event });
    const changed = this.model.apply(event);
    const measured = this.latency.observe(event, receivedAt);
    if (measured) {
      changed.push(...this.model.attachLatency(measured));
      this.#renderLatency();
    }
    if (changed.length) this.transcriptView.render(changed);
  }

  #onStatus(message, session) {
    this.serverStatus = message.status;
    const final = ["ended", "failed", "rejected", "transferred"].includes(message.status);
    if (final && this.session === session) {
      const why = message.error || message.end_reason || message.status;
      this.onServerEnd(message.status === "failed" ? "error" : "ended", `the server ended the call: ${why}`);
    }
  }

  #renderLatency() {
    const median = this.latency.median;
    this.#fact("latency", median === null ? "—" : `${Math.round(median)} ms`);
    const n = this.latency.samples.length;
    this.#fact("turns", n ? `median of ${n} turn${n === 1 ? "" : "s"}` : "no turns yet");
  }

  #fact(name, value) {
    const element = this.facts[name];
    if (element) element.textContent = value;
  }

  #level(rms) {
    if (!this.meterBar) return;
    // RMS of speech is ~0.05–0.3; scale so a normal voice fills most of the bar.
    this.meterBar.style.transform = `scaleX(${Math.min(1, rms * 4).toFixed(3)})`;
  }
}
