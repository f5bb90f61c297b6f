// The activity log: timestamped lines about signaling, media and agent events.
// Text only (textContent), so event payloads can never inject markup.

/** "HH:MM:SS.mmm" in UTC, like the server's logs. */
export function timestamp(date = new Date()) {
  return date.toISOString().slice(11, 23);
}

export class ActivityLog {
  /**
   * @param {HTMLElement} container the scrolling list
   * @param {{limit?: number}} [options] oldest lines are dropped beyond `limit`
   */
  constructor(container, { limit = 500 } = {}) {
    this.container = container;
    this.limit = limit;
  }

  /**
   * Append one line.
   * @param {string} label short category, e.g. "Session", "Peer", "Error"
   * @param {string} [detail] free text
   * @param {{level?: "info" | "error"}} [options]
   */
  log(label, detail = "", { level = "info" } = {}) {
    const row = document.createElement("div");
    row.className = `activity-item ${level}`;
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = timestamp();
    const body = document.createElement("span");
    const strong = document.createElement("span");
    strong.className = "label";
    strong.textContent = label;
    body.append(strong);
    if (detail) body.append(` — ${detail}`);
    row.append(ts, body);
    const stick = this.container.scrollTop + this.container.clientHeight >= this.container.scrollHeight - 4;
    this.container.append(row);
    while (this.container.childElementCount > this.limit) this.container.firstElementChild.remove();
    if (stick) this.container.scrollTop = this.container.scrollHeight;
    return row;
  }

  error(label, detail = "") {
    return this.log(label, detail, { level: "error" });
  }

  clear() {
    this.container.replaceChildren();
  }

  get size() {
    return this.container.childElementCount;
  }
}
