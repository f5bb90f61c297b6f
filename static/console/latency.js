// Turn round-trip latency as the console sees it: the user stopped speaking
// (input_audio_buffer.speech_stopped) → the first sign of the answer (the first
// response.output_audio_transcript.delta or output_audio_buffer.started), whichever comes first.

const ANSWER_STARTS = new Set(["response.output_audio_transcript.delta", "output_audio_buffer.started"]);

/** Median of numbers (null for none); the mean of the middle two for an even count. */
export function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export class LatencyTracker {
  constructor() {
    this.pendingSince = null;
    this.samples = [];
  }

  /**
   * Feed one event with the time it arrived (ms). Returns `{latencyMs, itemId, responseId}` when it
   * completes a turn's measurement, else null.
   */
  observe(event, at) {
    if (event.type === "input_audio_buffer.speech_stopped") {
      this.pendingSince = at;
      return null;
    }
    if (this.pendingSince === null || !ANSWER_STARTS.has(event.type)) return null;
    const latencyMs = Math.max(0, Math.round(at - this.pendingSince));
    this.pendingSince = null;
    this.samples.push(latencyMs);
    return { latencyMs, itemId: event.item_id ?? null, responseId: event.response_id ?? null };
  }

  get median() {
    return median(this.samples);
  }
}
