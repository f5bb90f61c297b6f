"""Validation of the GA session config (protocol.md §5) with pydantic.

Strict at the edge: an unknown field or a wrong type is a 400 `invalid_request_error` whose `param`
names the field the way OpenAI does (`session.audio.input.turn_detection.threshold`,
`session.tools[0].name`), so a client sees a mistake before a call starts instead of a silently
ignored setting. The fields follow the official SDK's `RealtimeSessionCreateRequestParam` /
`CallAcceptParams` (openai-python 3.57). Values the engine cannot act on (model names, transcription
models, tracing, prompts) are accepted and kept so that the same config works against OpenAI.

`validate_session` returns a plain dict with every default filled, which is what `LocalCall` receives.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from realtime_local.errors import ApiError, invalid_request

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"


class _Strict(BaseModel):
    # strict=True: "0.5" is not a float and 1 is not a bool, as in the API's JSON schema.
    model_config = ConfigDict(extra="forbid", strict=True)


class AudioPcm(_Strict):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000] = 24000


class AudioPcmu(_Strict):
    type: Literal["audio/pcmu"]


class AudioPcma(_Strict):
    type: Literal["audio/pcma"]


AudioFormat = Annotated[AudioPcm | AudioPcmu | AudioPcma, Field(discriminator="type")]


class NoiseReduction(_Strict):
    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = None


class Transcription(_Strict):
    model: str | None = None
    language: str | None = None
    languages: list[str] | None = None
    prompt: str | None = None
    keywords: list[str] | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class ServerVad(_Strict):
    type: Literal["server_vad"]
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=10_000)
    silence_duration_ms: int = Field(default=500, ge=0, le=10_000)
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = Field(default=None, ge=0)


class SemanticVad(_Strict):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


def _default_turn_detection() -> ServerVad:
    return ServerVad(type="server_vad")


class AudioInput(_Strict):
    format: AudioFormat = Field(default_factory=AudioPcm)
    noise_reduction: NoiseReduction | None = None
    transcription: Transcription | None = None
    # An explicit null turns server VAD off (push-to-talk); leaving it out means server VAD defaults.
    turn_detection: TurnDetection | None = Field(default_factory=_default_turn_detection)


class VoiceId(_Strict):
    id: str


class AudioOutput(_Strict):
    format: AudioFormat = Field(default_factory=AudioPcm)
    voice: str | VoiceId = DEFAULT_VOICE
    speed: float = Field(default=1.0, ge=0.25, le=1.5)


class Audio(_Strict):
    input: AudioInput = Field(default_factory=AudioInput)
    output: AudioOutput = Field(default_factory=AudioOutput)


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class McpToolFilter(_Strict):
    read_only: bool | None = None
    tool_names: list[str] | None = None


class McpApprovalFilter(_Strict):
    always: McpToolFilter | None = None
    never: McpToolFilter | None = None


class McpTool(_Strict):
    type: Literal["mcp"]
    server_label: str = Field(min_length=1)
    server_url: str | None = None
    server_description: str | None = None
    connector_id: str | None = None
    authorization: str | None = None
    headers: dict[str, str] | None = None
    allowed_tools: list[str] | McpToolFilter | None = None
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    require_approval: Literal["always", "never"] | McpApprovalFilter | None = None
    defer_loading: bool | None = None
    tunnel_id: str | None = None


Tool = Annotated[FunctionTool | McpTool, Field(discriminator="type")]


class ToolChoiceFunction(_Strict):
    type: Literal["function"]
    name: str


class ToolChoiceMcp(_Strict):
    type: Literal["mcp"]
    server_label: str
    name: str | None = None


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[ToolChoiceFunction | ToolChoiceMcp, Field(discriminator="type")]
)


class TracingConfiguration(_Strict):
    workflow_name: str | None = None
    group_id: str | None = None
    metadata: dict[str, Any] | None = None


class TokenLimits(_Strict):
    post_instructions: int | None = None


class RetentionRatioTruncation(_Strict):
    type: Literal["retention_ratio"]
    retention_ratio: float = Field(ge=0.0, le=1.0)
    token_limits: TokenLimits | None = None


class Prompt(_Strict):
    id: str
    version: str | None = None
    variables: dict[str, Any] | None = None


class Reasoning(_Strict):
    effort: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


def _audio_only() -> list[Literal["text", "audio"]]:
    return ["audio"]


class SessionConfig(_Strict):
    """The GA realtime session config, as sent to calls, client_secrets, accept and session.update."""

    type: Literal["realtime"] = "realtime"
    model: str = DEFAULT_MODEL
    instructions: str = ""
    output_modalities: list[Literal["text", "audio"]] = Field(default_factory=_audio_only, min_length=1)
    audio: Audio = Field(default_factory=Audio)
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    tools: list[Tool] = Field(default_factory=list, max_length=128)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | Literal["inf"] = "inf"
    prompt: Prompt | None = None
    reasoning: Reasoning | None = None
    tracing: Literal["auto"] | TracingConfiguration | None = None
    truncation: Literal["auto", "disabled"] | RetentionRatioTruncation = "auto"


def validate_session(data: Any, *, param: str = "session", require_type: bool = False) -> dict[str, Any]:
    """Validate a session config and return it with every default filled.

    `param` is the prefix of the field path reported in errors ("session" for a nested object, "" when
    the config is the whole body, as for `accept`). With `require_type`, a missing `type` is refused
    (the API requires `type: "realtime"` on accept). Raises `ApiError` (400).
    """
    if not isinstance(data, dict):
        raise invalid_request(
            f"Invalid type for '{param or 'body'}': expected an object.", param=param or None
        )
    if require_type and "type" not in data:
        raise invalid_request(
            f"Missing required parameter: '{_join(param, 'type')}'.",
            param=_join(param, "type"),
            code="missing_required_parameter",
        )
    try:
        config = SessionConfig.model_validate(data)
    except ValidationError as exc:
        raise _to_api_error(exc, data, param) from None
    return config.model_dump(mode="json")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _to_api_error(exc: ValidationError, data: Any, prefix: str) -> ApiError:
    """Turn pydantic's first error into the API's message, naming the field as the API does."""
    first = exc.errors(include_url=False)[0]
    path = _field_path(first["loc"], data, prefix)
    kind = first["type"]
    if kind == "extra_forbidden":
        return invalid_request(f"Unknown parameter: '{path}'.", param=path, code="unknown_parameter")
    if kind == "missing":
        return invalid_request(
            f"Missing required parameter: '{path}'.", param=path, code="missing_required_parameter"
        )
    return invalid_request(f"Invalid value for '{path}': {first['msg']}.", param=path, code="invalid_value")


def _field_path(loc: tuple[int | str, ...], data: Any, prefix: str) -> str:
    """Build `a.b[0].c` from pydantic's location, walking the input to drop union tags.

    Pydantic puts the chosen union member (`server_vad`, `function`, `str`, ...) into the location;
    those are not fields of the input, so the walk keeps only the elements the input actually has
    (plus a final missing key).
    """
    path = prefix
    current = data
    for index, element in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(element, int) and isinstance(current, list) and 0 <= element < len(current):
            path = f"{path}[{element}]"
            current = current[element]
        elif isinstance(element, str) and isinstance(current, dict) and (element in current or last):
            path = _join(path, element)
            current = current.get(element)
    return path
