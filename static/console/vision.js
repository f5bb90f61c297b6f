// Sight for the video modes: still frames of the local camera or screen track, sent to the model as
// image items over the `oai-events` data channel (the GA way to give gpt-realtime images):
//
//   {"type": "conversation.item.create",
//    "item": {"type": "message", "role": "user",
//             "content": [{"type": "input_image", "image_url": "data:image/jpeg;base64,…"}]}}
//
// Adaptive rate: one frame every `speakingIntervalMs` while the user speaks (the server's
// input_audio_buffer.speech_started/stopped on the same channel say when), one every `idleIntervalMs`
// otherwise. Each frame is scaled to at most `maxSide` px on its long side and JPEG-encoded; a frame
// that looks like the last one sent (mean difference of a 32x24 grey copy under `changeThreshold`) is
// not sent again. A frame must fit the channel's largest message (the engine takes 256 KiB): quality,
// then size, go down until it does.
//
// Each frame sent is announced with a `voiceagent-vision-frame` DOM event on `document` (detail: at,
// speaking, width, height, bytes), for tests and devtools.
//
// Settings, later ones winning: DEFAULTS, the page config's `vision` object, `data-vision-*` attributes
// of the preview element (`data-vision-speaking-ms`, `-idle-ms`, `-max-side`, `-quality`,
// `-change-threshold`), and `window.voiceagentConsoleOptions.vision`.

export const DEFAULTS = Object.freeze({
  speakingIntervalMs: 1000,
  idleIntervalMs: 4000,
  maxSide: 1024,
  quality: 0.7,
  changeThreshold: 0.02,
  detail: null, // "low" | "high" | "auto" to set the part's detail; null leaves the API's default
});

const ATTRIBUTES = {
  visionSpeakingMs: "speakingIntervalMs",
  visionIdleMs: "idleIntervalMs",
  visionMaxSide: "maxSide",
  visionQuality: "quality",
  visionChangeThreshold: "changeThreshold",
};
const PROBE_WIDTH = 32;
const PROBE_HEIGHT = 24;
/** Room left in a data channel message for the JSON around the data URL. */
const ENVELOPE_BYTES = 512;

/** The sampler's settings from the page (see the module comment). */
export function visionSettings({ config = {}, element = null, options = {} } = {}) {
  const settings = { ...DEFAULTS, ...(config.vision ?? {}) };
  for (const [attribute, name] of Object.entries(ATTRIBUTES)) {
    const raw = element?.dataset?.[attribute];
    if (raw !== undefined && raw !== "" && Number.isFinite(Number(raw))) settings[name] = Number(raw);
  }
  return { ...settings, ...(options.vision ?? {}) };
}

/** Mean absolute difference of two grey probes, 0 (same) .. 1. */
export function probeDifference(a, b) {
  if (!a || !b || a.length !== b.length) return 1;
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
  return sum / (a.length * 255);
}

/** Width and height of a `width`x`height` frame scaled to at most `maxSide` on its long side. */
export function scaledSize(width, height, maxSide) {
  const scale = Math.min(1, maxSide / Math.max(width, height, 1));
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

export class FrameSampler {
  /**
   * @param {{track: MediaStreamTrack, channel: RTCDataChannel, maxMessageBytes?: () => number,
   *          log?: {log: Function, error: Function}, settings?: object}} options
   */
  constructor({ track, channel, maxMessageBytes = () => 65536, log = null, settings = {} }) {
    this.track = track;
    this.channel = channel;
    this.maxMessageBytes = maxMessageBytes;
    this.log = log;
    this.settings = { ...DEFAULTS, ...settings };
    this.speaking = false;
    this.stopped = true;
    this.timer = null;
    this.lastProbe = null;
    this.lastSentAt = null;
    /** Figures for the page and tests: frames sent, unchanged ones skipped, bytes of the last one. */
    this.stats = { sent: 0, unchanged: 0, tooLarge: 0, lastBytes: 0, lastWidth: 0, lastHeight: 0 };
    this.video = document.createElement("video");
    this.video.muted = true;
    this.video.playsInline = true;
    this.canvas = document.createElement("canvas");
    this.probe = document.createElement("canvas");
    this.probe.width = PROBE_WIDTH;
    this.probe.height = PROBE_HEIGHT;
    this.onMessage = (message) => this.#serverEvent(message.data);
  }

  /** Start sampling (idempotent); the first frame goes as soon as the channel is open. */
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.video.srcObject = new MediaStream([this.track]);
    this.video.play().catch(() => {});
    this.channel.addEventListener("message", this.onMessage);
    this.#schedule(0);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    this.channel.removeEventListener("message", this.onMessage);
    this.video.srcObject = null;
  }

  get intervalMs() {
    return this.speaking ? this.settings.speakingIntervalMs : this.settings.idleIntervalMs;
  }

  #serverEvent(data) {
    if (typeof data !== "string" || data.length > 4096) return; // speech events are small; frames' echoes are not
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (event.type === "input_audio_buffer.speech_started" && !this.speaking) {
      this.speaking = true;
      // Look now (the user may be pointing at something), then at the faster rate.
      const since = this.lastSentAt === null ? Infinity : performance.now() - this.lastSentAt;
      this.#schedule(Math.max(0, this.settings.speakingIntervalMs - since));
    } else if (event.type === "input_audio_buffer.speech_stopped") {
      this.speaking = false;
    }
  }

  #schedule(delayMs) {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => this.#tick(), delayMs);
  }

  #tick() {
    if (this.stopped) return;
    let result = "failed";
    try {
      result = this.sample();
    } catch (error) {
      this.log?.error("Vision", `frame not sent: ${error?.message ?? error}`);
    }
    // Not ready yet (channel opening, first video frame not decoded): look again soon.
    this.#schedule(result === "not-ready" ? 200 : this.intervalMs);
  }

  /** Look at the current frame; send it if it changed. Returns "sent", "unchanged", "not-ready" or
   * "too-large". */
  sample() {
    if (this.channel.readyState !== "open" || this.track.readyState !== "live") return "not-ready";
    const { videoWidth, videoHeight } = this.video;
    if (!videoWidth || !videoHeight || this.video.readyState < 2) return "not-ready";
    const probeContext = this.probe.getContext("2d", { willReadFrequently: true });
    probeContext.drawImage(this.video, 0, 0, PROBE_WIDTH, PROBE_HEIGHT);
    const rgba = probeContext.getImageData(0, 0, PROBE_WIDTH, PROBE_HEIGHT).data;
    const grey = new Uint8Array(PROBE_WIDTH * PROBE_HEIGHT);
    for (let i = 0; i < grey.length; i++) {
      grey[i] = (rgba[i * 4] * 299 + rgba[i * 4 + 1] * 587 + rgba[i * 4 + 2] * 114) / 1000;
    }
    if (this.lastProbe && probeDifference(grey, this.lastProbe) < this.settings.changeThreshold) {
      this.stats.unchanged++;
      return "unchanged";
    }
    const url = this.#encode(videoWidth, videoHeight);
    if (!url) {
      this.stats.tooLarge++;
      return "too-large";
    }
    const part = { type: "input_image", image_url: url };
    if (this.settings.detail) part.detail = this.settings.detail;
    this.channel.send(
      JSON.stringify({
        type: "conversation.item.create",
        item: { type: "message", role: "user", content: [part] },
      }),
    );
    this.lastProbe = grey;
    this.lastSentAt = performance.now();
    this.stats.sent++;
    this.stats.lastBytes = url.length;
    // For tests and devtools: one DOM event per frame sent (when, at which rate, how big).
    document.dispatchEvent(
      new CustomEvent("voiceagent-vision-frame", {
        detail: { at: performance.now(), speaking: this.speaking, width: this.stats.lastWidth, height: this.stats.lastHeight, bytes: url.length },
      }),
    );
    if (this.stats.sent === 1) {
      this.log?.log("Vision", `sending frames (${this.stats.lastWidth}x${this.stats.lastHeight}, ${Math.round(url.length / 1024)} KB)`);
    }
    return "sent";
  }

  /** The frame as a JPEG data URL that fits one channel message, or null if none does. */
  #encode(videoWidth, videoHeight) {
    const limit = Math.max(4096, this.maxMessageBytes() - ENVELOPE_BYTES);
    let side = this.settings.maxSide;
    for (let attempt = 0; attempt < 6; attempt++) {
      const { width, height } = scaledSize(videoWidth, videoHeight, side);
      this.canvas.width = width;
      this.canvas.height = height;
      this.canvas.getContext("2d").drawImage(this.video, 0, 0, width, height);
      for (const quality of [this.settings.quality, 0.5, 0.35]) {
        const url = this.canvas.toDataURL("image/jpeg", quality);
        if (url.length <= limit) {
          this.stats.lastWidth = width;
          this.stats.lastHeight = height;
          return url;
        }
      }
      side = Math.round(side * 0.7);
    }
    return null;
  }
}
