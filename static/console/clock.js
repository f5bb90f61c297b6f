// The header's duration clock: minutes, seconds and milliseconds since the session became active.

/** Format elapsed milliseconds as "MM:SS.mmm" (minutes keep growing past 99). */
export function formatElapsed(ms) {
  const safe = Math.max(0, Math.floor(ms));
  const minutes = Math.floor(safe / 60000);
  const seconds = Math.floor((safe % 60000) / 1000);
  const millis = safe % 1000;
  return `${String(minutes).padStart(2, "0")}:${String(seconds).padStart(2, "0")}.${String(millis).padStart(3, "0")}`;
}

export class DurationClock {
  /**
   * @param {HTMLElement} element where the time is written
   * @param {{now?: () => number, intervalMs?: number}} [options] clock source (tests) and refresh rate
   */
  constructor(element, { now = () => performance.now(), intervalMs = 31 } = {}) {
    this.element = element;
    this.now = now;
    this.intervalMs = intervalMs;
    this.startedAt = null;
    this.stoppedAt = null;
    this.timer = null;
    this.render();
  }

  get running() {
    return this.timer !== null;
  }

  /** Milliseconds counted so far (frozen once stopped). */
  get elapsedMs() {
    if (this.startedAt === null) return 0;
    return (this.stoppedAt ?? this.now()) - this.startedAt;
  }

  start() {
    this.stop();
    this.startedAt = this.now();
    this.stoppedAt = null;
    this.timer = setInterval(() => this.render(), this.intervalMs);
    this.render();
  }

  /** Freeze the clock on the final duration (it stays visible until reset). */
  stop() {
    if (this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
      this.stoppedAt = this.now();
    }
    this.render();
  }

  reset() {
    this.stop();
    this.startedAt = null;
    this.stoppedAt = null;
    this.render();
  }

  render() {
    this.element.textContent = formatElapsed(this.elapsedMs);
  }
}
