"""Responders: deterministic rules, and a chat-completions client against a real loopback server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from realtime_local.speech.base import ConversationTurn, FunctionCallReply, Reply, TextReply, ToolSpec
from realtime_local.speech.responder import (
    GREETING,
    OpenAICompatibleResponder,
    ResponderError,
    RuleResponder,
    summarize_output,
)

WEATHER = ToolSpec(
    name="get_weather",
    description="Get the current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
ORDER = ToolSpec(
    name="lookup_order",
    description="Look up the status of a customer order",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "verbose": {"type": "boolean"}},
        "required": ["order_id"],
    },
)
LIGHTS = ToolSpec(
    name="set_lights",
    description="Switch the lights of a room",
    parameters={
        "type": "object",
        "properties": {"room": {"type": "string"}, "level": {"type": "integer"}},
        "required": ["room", "level"],
    },
)
TOOLS = [WEATHER, ORDER, LIGHTS]


def rules(*turns: ConversationTurn, tools: list[ToolSpec] | None = None) -> list[Reply]:
    return list(RuleResponder().reply(instructions="Be brief.", conversation=turns, tools=tools or []))


def user(text: str) -> ConversationTurn:
    return ConversationTurn(role="user", text=text)


def spoken(replies: list[Reply]) -> str:
    assert all(isinstance(reply, TextReply) for reply in replies)
    return " ".join(reply.text for reply in replies if isinstance(reply, TextReply))


def test_an_empty_conversation_is_greeted() -> None:
    assert rules() == [TextReply(GREETING)]


def test_a_quoted_greeting_in_the_instructions_is_used() -> None:
    instructions = 'You answer for Acme. Start with "Welcome to Acme, what can I do for you?" and be brief.'
    replies = list(RuleResponder().reply(instructions=instructions, conversation=[user("Hi")], tools=[]))
    assert replies == [TextReply("Welcome to Acme, what can I do for you?")]


def test_a_greeting_is_answered_with_a_greeting() -> None:
    assert rules(user("Hello there!")) == [TextReply(GREETING)]


def test_the_first_turn_is_greeted_and_echoed() -> None:
    assert rules(user("What time is it?")) == [TextReply("Hello! You said: What time is it?")]


def test_later_turns_are_echoed() -> None:
    turns = (user("Hi"), ConversationTurn(role="assistant", text=GREETING), user("I like trains"))
    assert rules(*turns) == [TextReply("You said: I like trains.")]


def test_nothing_heard_asks_again() -> None:
    assert "did not catch" in spoken(rules(user("  ")))


def test_asking_for_the_weather_calls_the_weather_tool_with_the_city() -> None:
    assert rules(user("What's the weather in Paris?"), tools=TOOLS) == [
        FunctionCallReply(name="get_weather", arguments='{"city": "Paris"}')
    ]


def test_a_multi_word_city_and_trailing_words_are_handled() -> None:
    (call,) = rules(user("what is the weather like in New York today"), tools=TOOLS)
    assert isinstance(call, FunctionCallReply) and json.loads(call.arguments) == {"city": "New York"}


def test_required_string_after_the_parameter_name_and_optional_ones_left_out() -> None:
    (call,) = rules(user("Can you check my order 1234?"), tools=TOOLS)
    assert call == FunctionCallReply(name="lookup_order", arguments='{"order_id": "1234"}')


def test_numbers_and_places_fill_their_parameters() -> None:
    (call,) = rules(user("Set the lights to 40 in the kitchen"), tools=TOOLS)
    assert isinstance(call, FunctionCallReply) and call.name == "set_lights"
    assert json.loads(call.arguments) == {"room": "kitchen", "level": 40}


def test_without_a_matching_tool_it_speaks() -> None:
    assert rules(user("Tell me about trains"), tools=[WEATHER]) == [
        TextReply("Hello! You said: Tell me about trains.")
    ]


def test_the_tool_result_is_spoken_after_function_call_output() -> None:
    turns = (
        user("What's the weather in Paris?"),
        ConversationTurn(
            role="function_call", name="get_weather", call_id="call_1", arguments='{"city":"Paris"}'
        ),
        ConversationTurn(
            role="function_call_output", call_id="call_1", text='{"forecast": "sunny", "temp_c": 21}'
        ),
    )
    assert rules(*turns, tools=TOOLS) == [TextReply("Here is what I found: forecast sunny, temp c 21.")]


def test_plain_text_and_long_outputs_are_summarized_for_speech() -> None:
    assert summarize_output("It is sunny") == "It is sunny."
    long = summarize_output(json.dumps({"items": ["word " * 40] * 5}), limit=100)
    assert len(long) <= 102 and long.endswith("…")


@pytest.mark.parametrize("ask", ["Tell me a long story", "Please count to twenty", "count to 20"])
def test_long_reply_triggers_give_several_sentences(ask: str) -> None:
    replies = rules(user(ask))
    text = spoken(replies)
    assert len(text.split()) >= 20
    assert text.count(".") >= 8


# -- OpenAI-compatible responder against a real HTTP server on loopback ----------------------------
class ChatServer:
    """A tiny chat-completions server: records requests, streams the scripted SSE chunks."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.chunks: list[dict[str, Any]] = []
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                server.requests.append({"path": self.path, **json.loads(self.rfile.read(length))})
                server.headers.append(dict(self.headers))
                if server.status != 200:
                    body = b'{"error": {"message": "model not loaded"}}'
                    self.send_response(server.status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for chunk in server.chunks:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def text(self, *pieces: str) -> None:
        self.chunks = [{"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in pieces]


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def ask(responder: OpenAICompatibleResponder, *turns: ConversationTurn, tools: list[ToolSpec]) -> list[Reply]:
    return list(responder.reply(instructions="You are terse.", conversation=turns, tools=tools))


def test_streamed_text_is_yielded_sentence_by_sentence(chat_server: ChatServer) -> None:
    chat_server.text("Hello", " there! It is ", "sunny in Par", "is. Anything", " else?")
    responder = OpenAICompatibleResponder(chat_server.url, model="tiny", api_key="sk-test")

    replies = ask(responder, user("Weather?"), tools=[])

    assert replies == [
        TextReply("Hello there!"),
        TextReply("It is sunny in Paris."),
        TextReply("Anything else?"),
    ]
    request = chat_server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["model"] == "tiny" and request["stream"] is True
    assert request["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Weather?"},
    ]
    assert "tools" not in request
    assert chat_server.headers[0]["Authorization"] == "Bearer sk-test"


def test_tool_call_fragments_become_one_function_call(chat_server: ChatServer) -> None:
    call = {
        "index": 0,
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    chat_server.chunks = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
        {
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}}
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]},
                }
            ]
        },
    ]
    responder = OpenAICompatibleResponder(chat_server.url, model="tiny")

    replies = ask(responder, user("What's the weather in Paris?"), tools=[WEATHER])

    assert replies == [FunctionCallReply(name="get_weather", arguments='{"city": "Paris"}')]
    assert chat_server.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather for a city",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert "Authorization" not in chat_server.headers[0]


def test_function_calls_and_outputs_are_sent_as_tool_messages(chat_server: ChatServer) -> None:
    chat_server.text("It is sunny.")
    responder = OpenAICompatibleResponder(chat_server.url + "/chat/completions", model="tiny")
    turns = (
        user("Weather in Paris?"),
        ConversationTurn(
            role="function_call", name="get_weather", call_id="call_1", arguments='{"city":"Paris"}'
        ),
        ConversationTurn(role="function_call_output", call_id="call_1", text='{"forecast":"sunny"}'),
    )

    assert ask(responder, *turns, tools=[WEATHER]) == [TextReply("It is sunny.")]

    messages = chat_server.requests[0]["messages"]
    assert messages[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"forecast":"sunny"}'}


def test_an_error_status_raises_with_the_servers_message(chat_server: ChatServer) -> None:
    chat_server.status = 503
    responder = OpenAICompatibleResponder(chat_server.url, model="tiny")
    with pytest.raises(ResponderError, match=r"503.*model not loaded"):
        ask(responder, user("Hi"), tools=[])


def test_an_unreachable_server_raises_a_responder_error() -> None:
    # A port that was just closed: connection refused at once on loopback.
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    responder = OpenAICompatibleResponder(f"http://127.0.0.1:{port}/v1", model="tiny", connect_timeout_s=2)
    with pytest.raises(ResponderError, match="failed"):
        ask(responder, user("Hi"), tools=[])


def test_a_timezone_parameter_takes_the_place_asked_about() -> None:
    clock = ToolSpec(
        name="get_current_time",
        description="Get the current date and time in a time zone.",
        parameters={
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    )
    (call,) = rules(user("What time is it in Tokyo?"), tools=[*TOOLS, clock])
    assert call == FunctionCallReply(name="get_current_time", arguments='{"timezone": "Tokyo"}')
