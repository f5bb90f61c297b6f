// Records a call on the console: the microphone and the agent's voice mixed with WebAudio into one
// stream, encoded by MediaRecorder as Opus in WebM, uploaded in ~2 s chunks while the call runs, so
// that a crash or a reload loses at most the last few seconds.
//
// Upload protocol (calls/views/recordings.py): POST /calls/<id>/recording?offset=N with the next
// bytes; the server appends only when N is the size it holds and answers that size (409 with the
// size otherwise). The client keeps its chunks addressed by byte offset, so after a lost answer, a
// retry or a 409 it drops or slices what the server already has and goes on from there. The last
// request carries `final=1`. A console reloaded mid-call finishes the recording it left (HEAD gives
// the size held). Recording is off when the page config says so (`recordCalls`, the agent profile's
// switch) or when the browser cannot record WebM/Opus.

import { csrfToken } from "./http.js";

const MIME_TYPE = "audio/webm;codecs=opus";
const TIMESLICE_MS = 2000;
const URL_TEMPLATE = "/calls/{id}/recording";
const RETRY_MS = [500, 1000, 2000, 4000, 8000];
const LEFTOVER_KEY = "voiceagent.recording";
const KEEPALIVE_MAX_BYTES = 48 * 1024;
/** Statuses after which retrying cannot help: recording off, too large, not ours, not WebM. */
const FATAL = new Set([400, 401, 403, 404, 413, 415]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function recordingUrl(config, callId) {
  return (config.urls?.recording ?? URL_TEMPLATE).replace("{id}", encodeURIComponent(callId));
}

/** The console's recorder: one `Recording` per call (a late upload of the previous call never mixes
 * with the next one), the "recording" indicator, and the tab's unfinished recording after a reload. */
export class CallRecorder {
  /** @param {{indicator?: HTMLElement | null}} options the console's "recording" indicator */
  constructor({ indicator = null } = {}) {
    this.indicator = indicator;
    this.current = new Recording({ show: () => {} });
  }

  static supported() {
    return typeof MediaRecorder !== "undefined" && MediaRecorder.isTypeSupported(MIME_TYPE);
  }

  /** Start recording a call that has an id (when the config's `recordCalls` allows and the browser
   * can); returns whether it records. */
  begin({ callId, micStream, config = {}, log = null }) {
    this.current.stop().catch(() => {});
    // Only the current call's recording drives the indicator (the previous one may still be uploading).
    const recording = new Recording({ show: (on) => this.current === recording && this.#show(on) });
    this.current = recording;
    this.#show(false);
    if (!config.recordCalls) return false;
    if (!CallRecorder.supported()) {
      log?.log("Recording", "this browser cannot record WebM/Opus: the call is not recorded");
      return false;
    }
    this.current.start({ callId, micStream, config, log });
    return true;
  }

  addRemote(stream) {
    this.current.addRemote(stream);
  }

  stop(options) {
    return this.current.stop(options);
  }

  abandon() {
    this.current.abandon();
  }

  get state() {
    return this.current.state;
  }

  /** On page load: finish the recording a previous page of this tab left unfinished (a reload or a
   * crash mid-call). The server keeps what was uploaded; this only closes it. */
  static async finishLeftover() {
    let leftover = null;
    try {
      leftover = JSON.parse(sessionStorage.getItem(LEFTOVER_KEY) ?? "null");
      sessionStorage.removeItem(LEFTOVER_KEY);
    } catch {}
    if (!leftover?.url) return null;
    const head = await fetch(leftover.url, { method: "HEAD", credentials: "same-origin" });
    if (!head.ok || head.headers.get("X-Recording-Finished") === "true") return null;
    const size = Number(head.headers.get("Upload-Offset") ?? "0");
    if (!size) return null;
    await fetch(`${leftover.url}?offset=${size}&final=1`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": MIME_TYPE, "X-CSRFToken": csrfToken() },
      body: new Blob([]),
    });
    return { callId: leftover.callId, size };
  }

  #show(on) {
    if (!this.indicator) return;
    this.indicator.hidden = !on;
    this.indicator.dataset.state = on ? "on" : "off";
  }
}

/** One call's recording: MediaRecorder over the mixed stream, and its ordered, resumable upload. */
class Recording {
  constructor({ show }) {
    this.show = show;
    this.callId = null;
    this.config = {};
    this.log = null;
    this.recorder = null;
    this.context = null;
    this.destination = null;
    this.sources = [];
    this.queue = []; // {start, blob}, in order
    this.produced = 0; // bytes MediaRecorder gave us
    this.serverSize = 0; // bytes the server holds
    this.chunksSent = 0;
    this.pumping = null;
    this.stopping = null;
    this.failed = null;
    this.finished = false;
    this.startedAt = 0;
    this.stoppedAt = null;
  }

  /** What tests and devtools may look at. */
  get state() {
    return {
      callId: this.callId,
      recording: this.recorder?.state === "recording",
      produced: this.produced,
      uploaded: this.serverSize,
      chunksSent: this.chunksSent,
      wallSeconds: this.startedAt ? ((this.stoppedAt ?? performance.now()) - this.startedAt) / 1000 : 0,
      pending: this.queue.length,
      finished: this.finished,
      failed: this.failed,
    };
  }

  /** Record the microphone now, the agent when `addRemote` comes. */
  start({ callId, micStream, config, log }) {
    this.callId = callId;
    this.config = config;
    this.log = log;
    this.context = new AudioContext();
    this.context.resume().catch(() => {});
    this.destination = this.context.createMediaStreamDestination();
    if (micStream?.getAudioTracks().length) this.#mix(micStream);
    this.recorder = new MediaRecorder(this.destination.stream, { mimeType: MIME_TYPE });
    this.recorder.addEventListener("dataavailable", (event) => {
      if (!event.data || event.data.size === 0) return;
      this.queue.push({ start: this.produced, blob: event.data });
      this.produced += event.data.size;
      this.#pump();
    });
    this.startedAt = performance.now();
    this.recorder.start(TIMESLICE_MS);
    try {
      sessionStorage.setItem(LEFTOVER_KEY, JSON.stringify({ callId, url: recordingUrl(config, callId) }));
    } catch {}
    this.show(true);
    log?.log("Recording", "on (microphone and agent, uploaded every 2 s)");
  }

  /** Mix the agent's voice in (the remote stream of the call). */
  addRemote(stream) {
    if (!this.context || !stream?.getAudioTracks().length) return;
    this.#mix(stream);
  }

  /** Stop recording, upload what is left and finish the recording; resolves when done (or given
   * up after `timeoutMs`). Idempotent. */
  stop({ timeoutMs = 15000 } = {}) {
    if (!this.recorder) return Promise.resolve();
    this.stopping ??= this.#stop(timeoutMs);
    return this.stopping;
  }

  /** The page is going away: stop the recorder; what was uploaded stays, the rest is lost. */
  abandon() {
    if (this.recorder?.state === "recording") this.recorder.stop();
    this.show(false);
  }

  async #stop(timeoutMs) {
    const recorder = this.recorder;
    this.stoppedAt = performance.now();
    if (recorder.state !== "inactive") {
      const stopped = new Promise((resolve) => recorder.addEventListener("stop", resolve, { once: true }));
      recorder.stop();
      await stopped;
    }
    this.show(false);
    for (const source of this.sources) source.disconnect();
    this.context?.close().catch(() => {});
    const deadline = performance.now() + timeoutMs;
    while ((this.queue.length || this.pumping) && !this.failed && performance.now() < deadline) {
      await (this.pumping ?? sleep(50));
    }
    if (!this.failed && !this.queue.length && this.serverSize > 0) {
      const response = await this.#post(this.serverSize, new Blob([]), { final: true }).catch(() => null);
      this.finished = Boolean(response?.ok);
    }
    if (this.finished || this.failed) {
      try {
        sessionStorage.removeItem(LEFTOVER_KEY);
      } catch {}
    }
    const seconds = ((performance.now() - this.startedAt) / 1000).toFixed(1);
    this.log?.log("Recording", this.failed ? `stopped: ${this.failed}` : `saved (${this.serverSize} bytes, ${seconds} s)`);
  }

  #mix(stream) {
    const source = this.context.createMediaStreamSource(new MediaStream(stream.getAudioTracks()));
    source.connect(this.destination);
    this.sources.push(source);
  }

  #pump() {
    this.pumping ??= this.#upload().finally(() => {
      this.pumping = null;
    });
  }

  async #upload() {
    let attempt = 0;
    while (this.queue.length && !this.failed) {
      const head = this.queue[0];
      const end = head.start + head.blob.size;
      if (end <= this.serverSize) {
        this.queue.shift(); // the server has it already (an answer was lost)
        continue;
      }
      const body = head.start < this.serverSize ? head.blob.slice(this.serverSize - head.start) : head.blob;
      let response = null;
      try {
        response = await this.#post(this.serverSize, body);
      } catch {}
      if (response?.ok || response?.status === 409) {
        attempt = 0;
        const answer = await response.json().catch(() => ({}));
        if (response.ok) this.chunksSent += 1;
        if (answer?.error?.code === "recording_finished") this.failed = "the recording was closed";
        const size = Number(answer.size ?? response.headers.get("Upload-Offset"));
        if (Number.isFinite(size)) this.serverSize = size;
        continue;
      }
      if (response && FATAL.has(response.status)) {
        const answer = await response.json().catch(() => ({}));
        this.failed = answer?.error?.message ?? `HTTP ${response.status}`;
        this.log?.error("Recording", `upload refused: ${this.failed}`);
        this.show(false);
        if (this.recorder?.state === "recording") this.recorder.stop();
        return;
      }
      await sleep(RETRY_MS[Math.min(attempt++, RETRY_MS.length - 1)]);
    }
  }

  #post(offset, body, { final = false } = {}) {
    const params = new URLSearchParams({ offset: String(offset) });
    if (offset === 0) params.set("elapsed_ms", String(Math.round(performance.now() - this.startedAt)));
    if (final) params.set("final", "1");
    return fetch(`${recordingUrl(this.config, this.callId)}?${params}`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": MIME_TYPE, "X-CSRFToken": csrfToken(this.config) },
      body,
      // A chunk posted as the page goes away (reload, tab closed) still reaches the server; browsers
      // allow ~64 KiB of such requests in flight, more than a 2 s chunk.
      keepalive: body.size < KEEPALIVE_MAX_BYTES,
    });
  }
}
