// Local media per console mode, and a level meter for the agent's voice.

/** Microphone constraints; `processing: false` turns off echo cancellation, noise suppression and AGC
 * (deterministic audio for tests and benchmarks). */
function micConstraints(processing) {
  return processing
    ? true
    : { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
}

/**
 * The tracks a mode sends: always the microphone; the camera for "webcam"; a screen for "screen".
 * @returns {Promise<{audio: MediaStreamTrack, video: MediaStreamTrack | null, preview: MediaStream}>}
 */
export async function openLocalMedia(mode, options = {}) {
  try {
    return await capture(mode, options);
  } catch (error) {
    const what = mode === "screen" ? "the screen and microphone" : mode === "webcam" ? "the camera and microphone" : "the microphone";
    throw new Error(`could not open ${what}: ${error?.message ?? error}`);
  }
}

async function capture(mode, { processing = true }) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("this browser cannot capture audio here (a secure context — https or localhost — is required)");
  }
  const audio = micConstraints(processing);
  let stream;
  if (mode === "screen") {
    const screen = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    try {
      const mic = await navigator.mediaDevices.getUserMedia({ audio });
      stream = new MediaStream([...mic.getAudioTracks(), ...screen.getVideoTracks()]);
    } catch (error) {
      screen.getTracks().forEach((track) => track.stop());
      throw error;
    }
  } else {
    stream = await navigator.mediaDevices.getUserMedia({ audio, video: mode === "webcam" });
  }
  return { audio: stream.getAudioTracks()[0], video: stream.getVideoTracks()[0] ?? null, preview: stream };
}

/** Stop every track of a stream (idempotent; null is fine). */
export function stopStream(stream) {
  stream?.getTracks().forEach((track) => track.stop());
}

/**
 * Root-mean-square level of a remote stream through a WebAudio AnalyserNode. `maxRms` is the loudest
 * 20 ms window seen so far (0 = silence), `level` the latest one (for the meter).
 */
export class LevelMeter {
  constructor(stream, { onLevel = () => {}, intervalMs = 50 } = {}) {
    this.maxRms = 0;
    this.level = 0;
    this.context = new AudioContext();
    this.context.resume().catch(() => {});
    this.source = this.context.createMediaStreamSource(stream);
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.source.connect(this.analyser);
    const samples = new Float32Array(this.analyser.fftSize);
    this.timer = setInterval(() => {
      this.analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const value of samples) sum += value * value;
      this.level = Math.sqrt(sum / samples.length);
      this.maxRms = Math.max(this.maxRms, this.level);
      onLevel(this.level);
    }, intervalMs);
  }

  close() {
    clearInterval(this.timer);
    this.source.disconnect();
    this.context.close().catch(() => {});
  }
}
