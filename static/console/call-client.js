// The call flow: local media → RTCPeerConnection → SDP offer through one of two transports → answer.
//
//   "proxy"  (default) POST /rtc?mode=… with the offer; our server forwards it and answers with the SDP
//            answer and `Location: /rtc/<call id>`.
//   "direct" POST /api/realtime/client-secret for an ephemeral key, POST the offer straight to
//            {realtimeBaseUrl}/realtime/calls with it, then register the call: POST /api/calls.
//
// Hanging up is always ours: POST /rtc/<call id>/hangup, then the peer is closed. The data channel is
// `oai-events`, created before the offer; in the video modes vision.js sends the camera's or the
// screen's frames on it as image items (nothing else is sent on it). A screen share stopped with the
// browser's own button ends the call the way *End session* does (`requestEnd`).

import { lastSegment, postSameOrigin } from "./http.js";
import { openLocalMedia, stopStream } from "./media.js";
import { FrameSampler, visionSettings } from "./vision.js";

const DEFAULT_URLS = {
  rtc: "/rtc",
  hangup: "/rtc/{id}/hangup",
  clientSecret: "/api/realtime/client-secret",
  registerCall: "/api/calls",
};

function urls(config) {
  return { ...DEFAULT_URLS, ...(config.urls ?? {}) };
}

/** Proxy transport: our server forwards the offer; the call id is Location's last segment. */
async function offerViaProxy({ sdp, mode, config }) {
  const response = await postSameOrigin(`${urls(config).rtc}?mode=${encodeURIComponent(mode)}`, {
    body: sdp,
    contentType: "application/sdp",
    config,
    what: "POST /rtc",
  });
  const location = response.headers.get("Location");
  if (!location) throw new Error("POST /rtc answered without a Location header");
  return { callId: lastSegment(location), answer: await response.text() };
}

/** Direct transport: an ephemeral key, the offer straight to the Realtime API, then registration. */
async function offerDirect({ sdp, mode, config, log }) {
  const base = (config.realtimeBaseUrl ?? "").replace(/\/+$/, "");
  if (!base) throw new Error("the page does not say where the Realtime API is (realtimeBaseUrl)");
  const secretResponse = await postSameOrigin(urls(config).clientSecret, {
    body: "{}",
    config,
    what: "POST /api/realtime/client-secret",
  });
  const secret = await secretResponse.json();
  log.log("Signaling", `ephemeral key issued (expires ${new Date(secret.expires_at * 1000).toISOString().slice(11, 19)} UTC)`);
  const upstream = await fetch(`${base}/realtime/calls`, {
    method: "POST",
    headers: { Authorization: `Bearer ${secret.value}`, "Content-Type": "application/sdp" },
    body: sdp,
    credentials: "omit",
  });
  if (!upstream.ok) {
    let detail = `HTTP ${upstream.status}`;
    try {
      detail = `${(await upstream.json()).error.message} (HTTP ${upstream.status})`;
    } catch {}
    throw new Error(`the Realtime API refused the offer: ${detail}`);
  }
  const location = upstream.headers.get("Location");
  if (!location) throw new Error("the Realtime API answered without a Location header (is it exposed to CORS?)");
  const answer = await upstream.text();
  const providerCallId = lastSegment(location);
  const registered = await postSameOrigin(urls(config).registerCall, {
    body: JSON.stringify({ provider_call_id: providerCallId, mode }),
    config,
    what: "POST /api/calls",
  });
  const call = await registered.json();
  return { callId: String(call.id), answer, providerCallId };
}

const TRANSPORTS = { proxy: offerViaProxy, direct: offerDirect };

export class CallClient {
  /**
   * @param {{transport?: () => string, onCall?: (session: CallSession) => void,
   *          mediaOptions?: {processing?: boolean}}} options
   *   `transport` is read at each launch; `onCall` runs once the call has an id (before media flows).
   */
  constructor({ transport = () => "proxy", onCall = () => {}, mediaOptions = {} } = {}) {
    this.transport = transport;
    this.onCall = onCall;
    this.mediaOptions = mediaOptions;
  }

  /** The console contract: resolves with a session once the answer is applied. */
  async start({ mode, config = {}, log, onState, onLocalStream, onRemoteStream, requestEnd = null }) {
    const transport = this.transport();
    const offer = TRANSPORTS[transport];
    if (!offer) throw new Error(`unknown transport "${transport}"`);
    const session = new CallSession({ mode, transport, config, log, onState });
    try {
      const media = await openLocalMedia(mode, this.mediaOptions);
      session.localStream = media.preview;
      if (media.video) onLocalStream(media.preview);
      const pc = session.createPeer(onRemoteStream);
      pc.addTransceiver(media.audio, { direction: "sendrecv", streams: [media.preview] });
      if (media.video) pc.addTrack(media.video, media.preview);
      if (media.video) session.watchVideo(media.video, { requestEnd });
      const description = await pc.createOffer();
      await pc.setLocalDescription(description);
      log.log("Signaling", `offer posted (${transport})`);
      const { callId, answer, providerCallId } = await offer({ sdp: description.sdp, mode, config, log });
      session.callId = callId;
      log.log("Signaling", `call ${callId}${providerCallId ? ` (${providerCallId})` : ""} answered`);
      this.onCall(session);
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      return session;
    } catch (error) {
      await session.end({ quiet: true }).catch(() => {});
      throw error;
    }
  }
}

/** One live call: its peer connection, local media and our call id. */
export class CallSession {
  constructor({ mode, transport, config, log, onState }) {
    this.mode = mode;
    this.transport = transport;
    this.config = config;
    this.log = log;
    this.onState = onState;
    this.callId = null;
    this.pc = null;
    this.channel = null;
    this.localStream = null;
    this.startedAt = performance.now();
    this.connectMs = null;
    this.ending = null;
    /** The frame sampler of a video mode (vision.js), null in audio mode. */
    this.vision = null;
  }

  get peerState() {
    return this.pc?.connectionState ?? "new";
  }

  createPeer(onRemoteStream) {
    const pc = new RTCPeerConnection({ iceServers: this.config.iceServers ?? [] });
    this.pc = pc;
    // Created before the offer so that it is negotiated with it; we only listen.
    this.channel = pc.createDataChannel("oai-events");
    pc.addEventListener("track", (event) => {
      if (event.track.kind === "audio") onRemoteStream(event.streams[0] ?? new MediaStream([event.track]));
    });
    pc.addEventListener("connectionstatechange", () => {
      const state = pc.connectionState;
      this.log.log("Peer", state);
      if (state === "connected" && this.connectMs === null) {
        this.connectMs = Math.round(performance.now() - this.startedAt);
        this.onState("active", `connected in ${this.connectMs} ms`);
      } else if (state === "failed" && !this.ending) {
        this.onState("error", "the media connection failed");
        this.end({ quiet: true });
      }
    });
    return pc;
  }

  /** Give the model sight of `track` (frames as image items once the channel opens); a screen share
   * the browser stops (its own "Stop sharing" button fires `ended`) ends the call. */
  watchVideo(track, { requestEnd = null } = {}) {
    const settings = visionSettings({
      config: this.config,
      element: document.querySelector("#preview"),
      options: window.voiceagentConsoleOptions ?? {},
    });
    this.vision = new FrameSampler({
      track,
      channel: this.channel,
      maxMessageBytes: () => this.pc?.sctp?.maxMessageSize || 65536,
      log: this.log,
      settings,
    });
    this.vision.start();
    track.addEventListener("ended", () => {
      this.vision?.stop();
      if (this.mode !== "screen" || this.ending) return;
      this.log.log("Vision", "screen sharing stopped");
      if (requestEnd) requestEnd("screen sharing stopped");
      else this.end().then(() => this.onState("ended", "screen sharing stopped"));
    });
  }

  #hangupUrl() {
    return (this.config.urls?.hangup ?? DEFAULT_URLS.hangup).replace("{id}", encodeURIComponent(this.callId));
  }

  /** The page is going away mid-call: ask our server to hang up with a beacon (a same-origin POST
   * without a body, which the hang-up endpoint accepts by its Origin header) and close the peer. */
  leave() {
    if (this.ending || !this.callId) return;
    navigator.sendBeacon(this.#hangupUrl());
    this.ending = Promise.resolve();
    this.vision?.stop();
    this.pc?.close();
    stopStream(this.localStream);
  }

  /** Hang up (ours), close the peer, stop local media. Idempotent; `hangup: false` when the call
   * already ended upstream (the server told us). */
  end({ hangup = true, quiet = false } = {}) {
    this.ending ??= this.#end(hangup, quiet);
    return this.ending;
  }

  async #end(hangup, quiet) {
    try {
      if (hangup && this.callId) {
        await postSameOrigin(this.#hangupUrl(), { body: "", config: this.config, what: "hang-up" });
        if (!quiet) this.log.log("Signaling", "hung up");
      }
    } finally {
      this.vision?.stop();
      this.channel?.close();
      this.pc?.close();
      stopStream(this.localStream);
    }
  }
}
