// The console's DOM: status pill, mode picker, launch/end buttons and the preview. It knows nothing
// about calls; the session controller (console.js) tells it what to show and listens to its events.

const STATUS_TEXT = {
  idle: "Idle",
  connecting: "Connecting…",
  active: "Connected",
  ending: "Ending…",
  error: "Error",
};

export class ConsoleUI extends EventTarget {
  /** @param {Document | HTMLElement} root */
  constructor(root = document) {
    super();
    const $ = (selector) => {
      const el = root.querySelector(selector);
      if (!el) throw new Error(`console markup is missing ${selector}`);
      return el;
    };
    this.statusDot = $("#status-dot");
    this.statusText = $("#status-text");
    this.launchButton = $("#launch");
    this.endButton = $("#end");
    this.clearButton = $("#clear-log");
    this.preview = $("#preview");
    this.previewLabel = $("#preview-label");
    this.previewVideo = $("#preview-video");
    this.previewEmpty = root.querySelector(".preview-empty .preview-text");
    this.remoteAudio = $("#remote-audio");
    this.modeButtons = Array.from(root.querySelectorAll("#mode-picker [data-mode]"));
    const checked = this.modeButtons.find((b) => b.getAttribute("aria-checked") === "true");
    this.mode = (checked ?? this.modeButtons[0]).dataset.mode;
    // The transport picker is optional markup: without it every call goes through our server.
    this.transportButtons = Array.from(root.querySelectorAll("#transport-picker [data-transport]"));
    const transport = this.transportButtons.find((b) => b.getAttribute("aria-checked") === "true");
    this.transport = transport?.dataset.transport ?? "proxy";

    this.launchButton.addEventListener("click", () => this.dispatchEvent(new Event("launch")));
    this.endButton.addEventListener("click", () => this.dispatchEvent(new Event("end")));
    this.clearButton.addEventListener("click", () => this.dispatchEvent(new Event("clear")));
    for (const button of this.modeButtons) {
      button.addEventListener("click", () => this.selectMode(button.dataset.mode));
      button.addEventListener("keydown", (event) => this.#arrowKeys(event, button));
    }
    for (const button of this.transportButtons) {
      button.addEventListener("click", () => this.selectTransport(button.dataset.transport));
    }
  }

  /** Pick how the offer reaches the Realtime API: "proxy" (our server) or "direct" (ephemeral key). */
  selectTransport(transport) {
    const target = this.transportButtons.find((b) => b.dataset.transport === transport);
    if (!target || target.disabled || transport === this.transport) return;
    for (const button of this.transportButtons) button.setAttribute("aria-checked", String(button === target));
    this.transport = transport;
    this.dispatchEvent(new CustomEvent("transportchange", { detail: { transport } }));
  }

  /** Select a mode (ignored while a session runs, when the picker is disabled). */
  selectMode(mode) {
    const target = this.modeButtons.find((b) => b.dataset.mode === mode);
    if (!target || target.disabled || mode === this.mode) return;
    for (const button of this.modeButtons) {
      const on = button === target;
      button.setAttribute("aria-checked", String(on));
      button.tabIndex = on ? 0 : -1;
    }
    this.mode = mode;
    this.dispatchEvent(new CustomEvent("modechange", { detail: { mode } }));
  }

  /** Reflect the session state: status pill, which buttons work, whether the mode can change. */
  setState(state, text = STATUS_TEXT[state] ?? state) {
    this.statusDot.className = `dot ${state === "ending" ? "connecting" : state}`;
    this.statusText.textContent = text;
    const busy = state === "connecting" || state === "active" || state === "ending";
    this.launchButton.disabled = busy;
    this.endButton.disabled = !(state === "connecting" || state === "active");
    for (const button of [...this.modeButtons, ...this.transportButtons]) button.disabled = busy;
    document.documentElement.dataset.sessionState = state;
    if (this.previewEmpty) {
      this.previewEmpty.textContent = busy
        ? "Audio only — no video in this mode."
        : "No media yet — launch a session.";
    }
  }

  /** Show a local or remote video stream in the preview (null clears it). */
  showPreview(stream, label = "Local") {
    this.previewVideo.srcObject = stream;
    this.previewLabel.textContent = label;
    const hasVideo = Boolean(stream && stream.getVideoTracks().length);
    this.preview.classList.toggle("has-media", hasVideo);
    this.previewVideo.classList.toggle("live", hasVideo);
    if (hasVideo) this.previewVideo.play().catch(() => {});
  }

  /** Play the agent's voice. */
  playRemoteAudio(stream) {
    this.remoteAudio.srcObject = stream;
    if (stream) this.remoteAudio.play().catch(() => {});
  }

  #arrowKeys(event, button) {
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const index = this.modeButtons.indexOf(button);
    const next = this.modeButtons[(index + step + this.modeButtons.length) % this.modeButtons.length];
    this.selectMode(next.dataset.mode);
    next.focus();
  }
}
