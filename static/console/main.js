// The console page's entry module: the console shell (console.js) with the call client and the live
// view plugged in. Exposes `window.voiceagentConsole` for tests and for poking around in devtools.
// `window.voiceagentConsoleOptions = {audioProcessing: false}` (set before this module runs) turns off
// the browser's echo cancellation / noise suppression / AGC, for deterministic audio in tests.

import { CallClient } from "./call-client.js";
import { startConsole } from "./console.js";
import { LiveView } from "./live-view.js";
import { CallRecorder } from "./recorder.js";

const options = window.voiceagentConsoleOptions ?? {};
const live = new LiveView(document);
// Records each call (mic + agent) when the page config's `recordCalls` says so; see recorder.js.
const recorder = new CallRecorder({ indicator: document.querySelector("#recording-indicator") });
CallRecorder.finishLeftover().catch(() => {});
let controller = null;
let session = null;

const client = new CallClient({
  transport: () => controller.ui.transport,
  mediaOptions: { processing: options.audioProcessing ?? true },
  onCall: (started) => {
    session = started;
    live.attach(started);
    recorder.begin({ callId: started.callId, micStream: started.localStream, config: started.config, log: started.log });
  },
});

/** The console's `callClient`: the call client plus the live view around each call. */
const callClient = {
  async start(args) {
    session = null;
    live.reset({ transport: controller.ui.transport });
    const onState = (state, detail) => {
      if (state === "ended" || state === "error") {
        live.stop();
        recorder.stop().catch(() => {});
      }
      args.onState(state, detail);
    };
    live.onServerEnd = (state, detail) => {
      const current = session;
      current?.end({ hangup: false }).catch(() => {});
      onState(state, detail);
    };
    const onRemoteStream = (stream) => {
      args.onRemoteStream(stream);
      live.watchRemote(stream);
      recorder.addRemote(stream);
    };
    let started;
    try {
      started = await client.start({ ...args, onState, onRemoteStream });
    } catch (error) {
      recorder.stop().catch(() => {});
      throw error;
    }
    return {
      end: async () => {
        live.stop();
        // Hang up first, then stop recording: the recording spans the call, ending when it ended.
        try {
          await started.end();
        } finally {
          await recorder.stop().catch(() => {});
        }
      },
    };
  },
};

controller = startConsole({ callClient });
// Closing or reloading the tab mid-call hangs up instead of leaving the call to time out.
window.addEventListener("pagehide", () => {
  recorder.abandon();
  session?.leave();
});

window.voiceagentConsole = {
  get state() {
    return controller.state;
  },
  get callId() {
    return live.callId;
  },
  get transport() {
    return live.transport;
  },
  get peerState() {
    return session?.peerState ?? "new";
  },
  get feedState() {
    return live.feed?.state ?? "closed";
  },
  get serverStatus() {
    return live.serverStatus;
  },
  get connectMs() {
    return session?.connectMs ?? null;
  },
  get transcript() {
    return live.model.turns.map((turn) => ({ ...turn }));
  },
  get eventsCount() {
    return live.events.count;
  },
  get latencies() {
    return [...live.latency.samples];
  },
  get medianLatencyMs() {
    return live.latency.median;
  },
  maxRemoteRms() {
    return live.maxRemoteRms;
  },
  get recording() {
    return recorder.state;
  },
};
