// The console shell (started by main.js): wires the UI, the duration clock and the activity log to a
// session controller. The call flow itself lives in a `callClient` (added by the web-calls work):
//
//   callClient.start({ mode, config, log, onState, onLocalStream, onRemoteStream, requestEnd })
//     -> Promise<session>
//   session.end() -> Promise<void>            // idempotent; must release every media track
//
// onState("active") starts the clock; onState("ended" | "error", detail) returns to idle.
// `config` is the page's #console-config JSON (modes, default mode, which engine serves calls).

import { ActivityLog } from "./activity-log.js";
import { DurationClock } from "./clock.js";
import { ConsoleUI } from "./ui.js";

export class SessionController {
  constructor({ ui, clock, log, callClient = null, config = {} }) {
    this.ui = ui;
    this.config = config;
    this.clock = clock;
    this.log = log;
    this.callClient = callClient;
    this.session = null;
    this.state = "idle";
    // Numbered attempts: a late answer from an abandoned launch must not touch the current state.
    this.attempt = 0;
    ui.addEventListener("launch", () => this.launch());
    ui.addEventListener("end", () => this.end("ended by you"));
    ui.addEventListener("clear", () => log.clear());
    ui.addEventListener("modechange", (event) => log.log("Mode", event.detail.mode));
    ui.addEventListener("transportchange", (event) => log.log("Transport", event.detail.transport));
    ui.setState("idle");
  }

  #setState(state, text) {
    this.state = state;
    this.ui.setState(state, text);
  }

  async launch() {
    if (this.state !== "idle" && this.state !== "error") return;
    const mode = this.ui.mode;
    const attempt = ++this.attempt;
    this.clock.reset();
    this.log.log("Session", `launching in ${mode} mode (${this.ui.transport} transport)`);
    if (!this.callClient) {
      this.log.error("Session", "calls are not available in this build yet (no call client is installed)");
      this.#setState("idle");
      return;
    }
    this.#setState("connecting");
    try {
      const session = await this.callClient.start({
        mode,
        config: this.config,
        log: this.log,
        onState: (state, detail) => attempt === this.attempt && this.#onSessionState(state, detail),
        onLocalStream: (stream) => attempt === this.attempt && this.ui.showPreview(stream, "Local"),
        onRemoteStream: (stream) => attempt === this.attempt && this.ui.playRemoteAudio(stream),
        // The call asks to end itself (a screen share stopped in the browser): as *End session* does.
        requestEnd: (reason) => attempt === this.attempt && this.end(reason),
      });
      if (attempt !== this.attempt) {
        await session.end();
        return;
      }
      this.session = session;
    } catch (error) {
      if (attempt !== this.attempt) return;
      this.log.error("Error", error?.message ?? String(error));
      this.#teardown("error");
    }
  }

  async end(reason) {
    if (this.state !== "connecting" && this.state !== "active") return;
    this.attempt++;
    this.#setState("ending");
    this.log.log("Session", reason);
    const session = this.session;
    this.session = null;
    try {
      await session?.end();
    } catch (error) {
      this.log.error("Error", `ending the session failed: ${error?.message ?? error}`);
    }
    this.#teardown("idle");
  }

  #onSessionState(state, detail) {
    if (state === "active") {
      this.#setState("active");
      this.clock.start();
      this.log.log("Session", detail || "connected");
    } else if (state === "ended" || state === "error") {
      if (state === "error") this.log.error("Error", detail || "the session failed");
      else this.log.log("Session", detail || "ended");
      this.attempt++;
      this.session = null;
      this.#teardown(state === "error" ? "error" : "idle");
    }
  }

  #teardown(state) {
    this.clock.stop();
    this.ui.showPreview(null);
    this.ui.playRemoteAudio(null);
    this.#setState(state);
  }
}

/** Build the console on this page. `callClient` is optional until the call flow exists. */
export function startConsole({ callClient = null, root = document } = {}) {
  const configElement = root.querySelector("#console-config");
  const config = configElement ? JSON.parse(configElement.textContent) : {};
  const ui = new ConsoleUI(root);
  if (config.defaultMode) ui.selectMode(config.defaultMode);
  if (config.defaultTransport) ui.selectTransport(config.defaultTransport);
  const clock = new DurationClock(root.querySelector("#duration"));
  const log = new ActivityLog(root.querySelector("#activity"));
  const controller = new SessionController({ ui, clock, log, callClient, config });
  log.log("Ready", `console loaded (${config.engine === "openai" ? "OpenAI Realtime" : "local engine"})`);
  document.documentElement.dataset.consoleReady = "true";
  return controller;
}
