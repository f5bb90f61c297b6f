// The call's server events, one row each (sequence, arrival time, type, a short summary), with a
// filter on the type. A row's JSON is rendered only when it is opened; text only (textContent).

import { timestamp } from "./activity-log.js";

/** A one-line hint of what an event carries, for the row. */
export function summarize(event) {
  if (event.type?.startsWith("voiceagent.tool.")) return `${event.name ?? ""} ${event.status ?? ""}`.trim();
  if (typeof event.delta === "string") return JSON.stringify(event.delta);
  if (typeof event.transcript === "string") return JSON.stringify(event.transcript);
  if (event.response?.status) return `status ${event.response.status}`;
  if (event.error?.message) return event.error.message;
  if (event.item?.role) return `${event.item.type ?? "item"} · ${event.item.role}`;
  return event.item_id ?? "";
}

export class EventLog {
  /**
   * @param {{list: HTMLElement, filter: HTMLInputElement, count: HTMLElement}} elements
   * @param {{limit?: number}} [options] rows kept on screen (the count keeps counting)
   */
  constructor({ list, filter, count }, { limit = 800 } = {}) {
    this.list = list;
    this.filter = filter;
    this.countElement = count;
    this.limit = limit;
    this.count = 0;
    filter.addEventListener("input", () => this.#applyFilter());
  }

  get query() {
    return this.filter.value.trim().toLowerCase();
  }

  clear() {
    this.list.replaceChildren();
    this.count = 0;
    this.#renderCount();
  }

  add({ sequence, event }) {
    this.count++;
    const row = document.createElement("details");
    row.className = "event-row";
    row.dataset.type = event.type ?? "";
    const summary = document.createElement("summary");
    const seq = document.createElement("span");
    seq.className = "seq";
    seq.textContent = `#${sequence}`;
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = timestamp();
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = event.type ?? "(no type)";
    const hint = document.createElement("span");
    hint.className = "hint";
    hint.textContent = summarize(event);
    summary.append(seq, ts, type, hint);
    row.append(summary);
    row.addEventListener("toggle", () => {
      if (row.open && !row.querySelector("pre")) {
        const pre = document.createElement("pre");
        pre.textContent = JSON.stringify(event, null, 2);
        row.append(pre);
      }
    });
    row.hidden = !this.#matches(row);
    const stick = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 24;
    this.list.append(row);
    while (this.list.childElementCount > this.limit) this.list.firstElementChild.remove();
    if (stick) this.list.scrollTop = this.list.scrollHeight;
    this.#renderCount();
  }

  #matches(row) {
    const query = this.query;
    return !query || row.dataset.type.toLowerCase().includes(query);
  }

  #applyFilter() {
    for (const row of this.list.children) row.hidden = !this.#matches(row);
    this.#renderCount();
  }

  #renderCount() {
    const shown = this.query ? Array.from(this.list.children).filter((row) => !row.hidden).length : this.count;
    this.countElement.textContent = this.query ? `${shown} of ${this.count}` : `${this.count} event${this.count === 1 ? "" : "s"}`;
  }
}
