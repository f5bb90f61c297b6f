// The call's live event stream: WebSocket /ws/calls/<id>/ (the observer's group, owner only).
//
// Messages: {"type": "event", "sequence", "event"} and {"type": "status", "status", "end_reason", "error"}.
// On every (re)connect the server first replays the stored events, so events are deduped by sequence
// and the socket reconnects with a short backoff until the call is final or the feed is closed.

const FINAL = new Set(["ended", "failed", "rejected", "transferred"]);

export class LiveFeed extends EventTarget {
  /**
   * @param {string} callId our call id (uuid)
   * @param {{url?: string, maxRetries?: number}} [options] `url` defaults to same-origin /ws/calls/<id>/
   */
  constructor(callId, { url = null, maxRetries = 8 } = {}) {
    super();
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    this.url = url ?? `${scheme}://${window.location.host}/ws/calls/${encodeURIComponent(callId)}/`;
    this.maxRetries = maxRetries;
    this.lastSequence = 0;
    this.seen = new Set();
    this.state = "connecting";
    this.closed = false;
    this.retries = 0;
    this.socket = null;
    this.#connect();
  }

  #setState(state, detail = "") {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, detail } }));
  }

  #connect() {
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.retries = 0;
      this.#setState("open");
    });
    socket.addEventListener("message", (message) => this.#receive(message.data));
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      if (this.closed) return this.#setState("closed");
      if (event.code === 4403 || event.code === 4404) {
        // Not ours, or unknown: retrying cannot help.
        this.closed = true;
        return this.#setState("closed", event.code === 4403 ? "not allowed to watch this call" : "no such call");
      }
      if (this.retries >= this.maxRetries) {
        this.closed = true;
        return this.#setState("closed", `gave up after ${this.retries} reconnects`);
      }
      const delay = Math.min(4000, 250 * 2 ** this.retries++);
      this.#setState("reconnecting", `closed (${event.code}); retrying in ${delay} ms`);
      setTimeout(() => this.closed || this.#connect(), delay);
    });
  }

  #receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.type === "event" && Number.isInteger(message.sequence) && message.event) {
      if (this.seen.has(message.sequence)) return;
      this.seen.add(message.sequence);
      this.lastSequence = Math.max(this.lastSequence, message.sequence);
      const detail = { sequence: message.sequence, event: message.event, receivedAt: performance.now() };
      this.dispatchEvent(new CustomEvent("event", { detail }));
    } else if (message.type === "status") {
      this.dispatchEvent(new CustomEvent("status", { detail: message }));
      if (FINAL.has(message.status)) this.close();
    }
  }

  /** Stop listening (idempotent). */
  close() {
    if (this.closed && this.state === "closed") return;
    this.closed = true;
    this.socket?.close(1000);
    this.#setState("closed");
  }
}
