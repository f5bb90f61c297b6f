// The live transcript: user and assistant turns assembled from the call's server events, partial text
// growing as deltas arrive, interrupted replies marked, each reply labelled with its turn latency.
// Frames the camera or screen sent (image items) show as thumbnails where they were sent: consecutive
// frames share one strip (role "frames"). TranscriptModel is pure data (testable without a page);
// TranscriptView renders it (textContent, and <img> for the thumbnails the observer stored).

/** @typedef {{itemId: string, role: "user"|"assistant"|"tool", text: string, final: boolean,
 *   interrupted: boolean, responseId: string|null, latencyMs: number|null, status?: string}} Turn */

/** Most thumbnails one strip shows (the latest ones); the call page has them all. */
export const MAX_STRIP_FRAMES = 12;

/** The image parts of a user message item, or [] (also for items with words in them). */
export function frameParts(item) {
  if (item.type !== "message" || item.role !== "user" || !Array.isArray(item.content)) return [];
  if (item.content.some((part) => part.text || part.transcript)) return [];
  return item.content.filter((part) => part.type === "input_image");
}

/** The one-line text of a tool call: `name(arguments)`, then `→ output` once it finished. */
export function toolCallText(event, previous = "") {
  const args = event.arguments === undefined ? "" : JSON.stringify(event.arguments);
  const call = event.arguments === undefined && previous ? previous.split(" → ")[0] : `${event.name ?? "tool"}(${args})`;
  if (event.type !== "voiceagent.tool.finished") return call;
  const took = Number.isFinite(event.duration_ms) ? ` (${event.duration_ms} ms)` : "";
  return `${call} → ${event.output ?? ""}${took}`;
}

export class TranscriptModel {
  constructor() {
    /** @type {Turn[]} */
    this.turns = [];
    this.byItem = new Map();
    this.pendingLatency = new Map(); // response id (or "") → latency waiting for its turn
  }

  #turn(itemId, role) {
    let turn = this.byItem.get(itemId);
    if (!turn) {
      turn = { itemId, role, text: "", final: false, interrupted: false, responseId: null, latencyMs: null };
      this.byItem.set(itemId, turn);
      this.turns.push(turn);
    }
    return turn;
  }

  #assistant(event) {
    const turn = this.#turn(event.item_id, "assistant");
    if (event.response_id && !turn.responseId) turn.responseId = event.response_id;
    for (const key of [turn.responseId, ""]) {
      if (key !== null && this.pendingLatency.has(key) && turn.latencyMs === null) {
        turn.latencyMs = this.pendingLatency.get(key);
        this.pendingLatency.delete(key);
      }
    }
    return turn;
  }

  /** Apply one server event; returns the turns it changed (empty if none). */
  apply(event) {
    const type = event.type;
    switch (type) {
      case "input_audio_buffer.committed":
        return event.item_id ? [this.#turn(event.item_id, "user")] : [];
      case "conversation.item.added":
      case "conversation.item.created": {
        const item = event.item ?? {};
        const frames = item.id ? frameParts(item) : [];
        if (frames.length) return this.#frames(item.id, frames);
        if (item.type !== "message" || !item.id || !["user", "assistant"].includes(item.role)) return [];
        const turn = this.#turn(item.id, item.role);
        const typed = (item.content ?? []).map((part) => part.text ?? part.transcript ?? "").join("");
        if (typed && !turn.text) turn.text = typed;
        return [turn];
      }
      case "conversation.item.input_audio_transcription.delta": {
        const turn = this.#turn(event.item_id, "user");
        if (!turn.final) turn.text += event.delta ?? "";
        return [turn];
      }
      case "conversation.item.input_audio_transcription.completed": {
        const turn = this.#turn(event.item_id, "user");
        turn.text = event.transcript ?? turn.text;
        turn.final = true;
        return [turn];
      }
      case "conversation.item.input_audio_transcription.failed": {
        const turn = this.#turn(event.item_id, "user");
        turn.final = true;
        turn.failed = true;
        return [turn];
      }
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta": {
        const turn = this.#assistant(event);
        if (!turn.final) turn.text += event.delta ?? "";
        return [turn];
      }
      case "response.output_audio_transcript.done":
      case "response.output_text.done": {
        const turn = this.#assistant(event);
        turn.text = event.transcript ?? event.text ?? turn.text;
        turn.final = true;
        return [turn];
      }
      case "conversation.item.truncated": {
        const turn = this.byItem.get(event.item_id);
        if (!turn) return [];
        turn.interrupted = true;
        return [turn];
      }
      // Our observer's own events: the agent's tool calls, shown where they happen in the talk.
      case "voiceagent.tool.started":
      case "voiceagent.tool.finished": {
        if (!event.call_id) return [];
        const turn = this.#turn(`tool:${event.call_id}`, "tool");
        turn.text = toolCallText(event, turn.text);
        turn.final = type === "voiceagent.tool.finished";
        turn.status = turn.final ? event.status ?? "completed" : "running";
        return [turn];
      }
      case "response.done": {
        const response = event.response ?? {};
        const ids = new Set((response.output ?? []).map((item) => item.id));
        const changed = this.turns.filter((t) => t.role === "assistant" && (ids.has(t.itemId) || (response.id && t.responseId === response.id)));
        for (const turn of changed) {
          turn.final = true;
          if (response.status === "cancelled") turn.interrupted = true;
        }
        return changed;
      }
      default:
        return [];
    }
  }

  /** File a frame item's images in the strip at the end of the transcript (a new one after a turn). */
  #frames(itemId, parts) {
    if (this.byItem.has(itemId)) return [];
    let strip = this.turns.at(-1);
    if (!strip || strip.role !== "frames") {
      strip = { itemId: `frames:${itemId}`, role: "frames", text: "", final: true, interrupted: false, responseId: null, latencyMs: null, frames: [] };
      this.turns.push(strip);
      this.byItem.set(strip.itemId, strip);
    }
    this.byItem.set(itemId, strip);
    for (const part of parts) {
      const facts = part.voiceagent_image ?? {};
      strip.frames.push({ itemId, url: typeof part.image_url === "string" ? part.image_url : null, width: facts.width ?? null, height: facts.height ?? null });
    }
    strip.text = `${strip.frames.length} frame${strip.frames.length === 1 ? "" : "s"} sent`;
    return [strip];
  }

  /** Attach a measured latency to its reply (now, or when the reply's first text arrives). */
  attachLatency({ latencyMs, itemId, responseId }) {
    const turn =
      (itemId && this.byItem.get(itemId)) ||
      this.turns.find((t) => t.role === "assistant" && responseId && t.responseId === responseId);
    if (turn && turn.latencyMs === null) {
      turn.latencyMs = latencyMs;
      return [turn];
    }
    this.pendingLatency.set(responseId ?? "", latencyMs);
    return [];
  }
}

export class TranscriptView {
  /** @param {HTMLElement} container the scrolling conversation */
  constructor(container) {
    this.container = container;
    this.elements = new Map();
  }

  clear() {
    this.container.replaceChildren();
    this.elements.clear();
  }

  /** Create or refresh the bubbles of `turns` (in model order: new ones are appended). */
  render(turns) {
    const stick = this.container.scrollTop + this.container.clientHeight >= this.container.scrollHeight - 24;
    for (const turn of turns) {
      let parts = this.elements.get(turn.itemId);
      if (!parts) {
        parts = this.#create(turn);
        this.elements.set(turn.itemId, parts);
        this.container.append(parts.bubble);
      }
      parts.bubble.classList.toggle("partial", !turn.final);
      parts.bubble.classList.toggle("interrupted", turn.interrupted);
      parts.bubble.dataset.final = String(turn.final);
      if (turn.status) parts.bubble.dataset.status = turn.status;
      parts.bubble.classList.toggle("failed", turn.status === "failed");
      parts.text.textContent = turn.text || (turn.failed ? "(not transcribed)" : "…");
      if (turn.frames) this.#renderFrames(parts, turn.frames);
      parts.tag.hidden = !turn.interrupted;
      parts.latency.hidden = turn.latencyMs === null;
      if (turn.latencyMs !== null) parts.latency.textContent = `${turn.latencyMs} ms`;
    }
    if (stick) this.container.scrollTop = this.container.scrollHeight;
  }

  #renderFrames(parts, frames) {
    parts.strip ??= parts.bubble.appendChild(Object.assign(document.createElement("div"), { className: "frames" }));
    const shown = frames.slice(-MAX_STRIP_FRAMES);
    parts.strip.replaceChildren(
      ...shown.map((frame) => {
        const image = document.createElement("img");
        image.className = "frame";
        image.dataset.itemId = frame.itemId;
        image.alt = "A frame the agent was shown";
        if (frame.width && frame.height) image.title = `${frame.width}x${frame.height}`;
        if (frame.url?.startsWith("data:image/")) image.src = frame.url;
        return image;
      }),
    );
  }

  #create(turn) {
    const bubble = document.createElement("div");
    bubble.className = `bubble ${turn.role}`;
    bubble.dataset.role = turn.role;
    bubble.dataset.itemId = turn.itemId;
    const who = document.createElement("div");
    who.className = "who";
    const role = document.createElement("span");
    role.textContent = { user: "You", assistant: "Agent", tool: "Tool", frames: "Camera / screen" }[turn.role] ?? turn.role;
    const latency = document.createElement("span");
    latency.className = "latency";
    latency.title = "From the end of your speech to the first sign of this reply";
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = "interrupted";
    who.append(role, latency, tag);
    const text = document.createElement("div");
    text.className = "text";
    bubble.append(who, text);
    return { bubble, text, latency, tag };
  }
}
