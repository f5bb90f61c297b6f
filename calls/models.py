"""The data of the product: agent profiles, calls and everything that happened during them.

Models hold data and invariants only; state changes live in `calls.services`, shared reads in
`calls.selectors`. A call's events and transcript are written by its observer alone.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

DEFAULT_INSTRUCTIONS = "Greet the user in English. Keep replies brief and conversational."
DEFAULT_VOICE = "marin"
DEFAULT_MODEL = "gpt-realtime"
#: 30 minutes: long enough for any real conversation, short enough to bound a forgotten call's cost.
DEFAULT_MAX_CALL_DURATION_S = 1800


def default_turn_detection() -> dict[str, object]:
    """Server VAD with the API's documented defaults (see docs/protocol: session config)."""
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }


class Voice(models.TextChoices):
    """Voices the Realtime API offers for audio output."""

    ALLOY = "alloy", "Alloy"
    ASH = "ash", "Ash"
    BALLAD = "ballad", "Ballad"
    CORAL = "coral", "Coral"
    ECHO = "echo", "Echo"
    SAGE = "sage", "Sage"
    SHIMMER = "shimmer", "Shimmer"
    VERSE = "verse", "Verse"
    MARIN = "marin", "Marin"
    CEDAR = "cedar", "Cedar"


class AgentProfile(models.Model):
    """How the agent behaves on a call: instructions, voice, model, tools and turn detection.

    Exactly one profile is the default (used for phone calls and web calls that name none); the
    database enforces "at most one", the data migration provides the first.
    """

    name = models.CharField(max_length=100, unique=True)
    instructions = models.TextField(default=DEFAULT_INSTRUCTIONS)
    voice = models.CharField(max_length=20, choices=Voice.choices, default=Voice.MARIN)
    model = models.CharField(max_length=100, default=DEFAULT_MODEL)
    tools = models.JSONField(
        default=list, blank=True, help_text='Names of the tools this agent may call, e.g. ["get_time"].'
    )
    turn_detection = models.JSONField(
        default=default_turn_detection,
        null=True,
        blank=True,
        help_text="The session's audio.input.turn_detection object; empty means push-to-talk (null).",
    )
    max_call_duration = models.PositiveIntegerField(
        default=DEFAULT_MAX_CALL_DURATION_S,
        help_text="Seconds after which the observer hangs the call up (the API has no shorter cap).",
    )
    phone_numbers = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            'Dialled numbers this agent answers, e.g. ["+15551230000"]; a phone call to a number no '
            "profile lists goes to the default profile."
        ),
    )
    transfer_targets = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            'Numbers or SIP URIs a phone call may be transferred to, e.g. ["+15551230001", '
            '"sip:desk@pbx.example.com"]; nothing else is allowed (toll fraud).'
        ),
    )
    record_calls = models.BooleanField(
        default=True,
        help_text=(
            "Keep the audio of web calls with this agent (the console records and uploads it); "
            "untick to switch recording off."
        ),
    )
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=Q(is_default=True),
                name="calls_agentprofile_single_default",
                violation_error_message=(
                    "Another agent profile is already the default; untick it there first."
                ),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} (default)" if self.is_default else self.name


class Call(models.Model):
    """One realtime call, whichever door it came through (web proxy, web direct, or SIP)."""

    class Source(models.TextChoices):
        WEB = "web", "Web"
        SIP = "sip", "Phone (SIP)"

    class Mode(models.TextChoices):
        AUDIO = "audio", "Audio only"
        WEBCAM = "webcam", "Webcam"
        SCREEN = "screen", "Share screen"
        PHONE = "phone", "Phone"

    class Transport(models.TextChoices):
        PROXY = "proxy", "SDP via our server"
        DIRECT = "direct", "Direct (ephemeral key)"
        SIP = "sip", "SIP"

    class Status(models.TextChoices):
        CONNECTING = "connecting", "Connecting"
        ACTIVE = "active", "Active"
        ENDED = "ended", "Ended"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        TRANSFERRED = "transferred", "Transferred"

    #: Statuses after which nothing more happens on the call.
    FINAL_STATUSES = frozenset({Status.ENDED, Status.FAILED, Status.REJECTED, Status.TRANSFERRED})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider_call_id = models.CharField(
        max_length=128,
        unique=True,
        null=True,
        blank=True,
        help_text="The Realtime API's call id (rtc_… / the SIP call id); unknown until the API answers.",
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.WEB)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.AUDIO)
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.PROXY)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="calls",
        help_text="Who placed the call from the console (web calls).",
    )
    caller_number = models.CharField(max_length=64, blank=True, help_text="The caller's number (SIP calls).")
    callee_number = models.CharField(
        max_length=64, blank=True, help_text="The number the caller dialled (SIP calls)."
    )
    sip_headers = models.JSONField(
        default=list,
        blank=True,
        help_text='The SIP INVITE\'s headers as the webhook carried them ([{"name", "value"}, …]).',
    )
    agent = models.ForeignKey(AgentProfile, on_delete=models.PROTECT, related_name="calls")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CONNECTING)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    usage = models.JSONField(default=dict, blank=True, help_text="Token usage summed from response.done.")
    session_tampered = models.BooleanField(
        default=False,
        help_text=(
            "Someone other than us changed the session's instructions or tools during the call; the "
            "observer put ours back (details in the call's voiceagent.security.* events)."
        ),
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="calls_call_user_created"),
            models.Index(fields=["status"], name="calls_call_status"),
        ]

    def __str__(self) -> str:
        who = self.caller_number or (self.user.get_username() if self.user_id and self.user else "")
        label = f"{self.get_source_display()} call {str(self.id)[:8]}"
        return f"{label} ({who})" if who else label

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def duration(self) -> dt.timedelta | None:
        """Time talked: from answer to end (or to now while the call is live); None if never answered."""
        if self.answered_at is None:
            return None
        end = self.ended_at or (None if self.is_final else timezone.now())
        if end is None:
            return None
        return max(end - self.answered_at, dt.timedelta(0))


class CallRecording(models.Model):
    """The audio of a web call, as the console recorded it (Opus in WebM), kept in Django's storage.

    A model of its own rather than fields on `Call`: most calls (phone calls, profiles with recording
    off) have none, and the upload's bookkeeping (the next expected offset, the chunk count, the
    playable copy) changes every two seconds during a call, which must not rewrite the call's row the
    observer also updates. The browser uploads chunks in order; chunk *i* is the storage object
    ``recordings/<call id>/chunks/<i>.webm`` and ``size`` is the offset the next chunk must start at.
    Storage backends cannot append (S3 and friends), so chunks stay separate objects until the
    recording is made playable: then they are concatenated and remuxed into one seekable WebM with a
    duration and cues (``playable_name``); once the recording is finished the chunks are deleted.
    See `calls.services.recordings` and docs/web-calls.md.
    """

    call = models.OneToOneField(Call, on_delete=models.CASCADE, primary_key=True, related_name="recording")
    content_type = models.CharField(max_length=100, help_text="As the browser sent it, e.g. audio/webm.")
    size = models.PositiveBigIntegerField(
        default=0, help_text="Bytes received so far: the offset the next chunk must start at."
    )
    chunk_count = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(
        default=timezone.now, help_text="When the browser started recording (server clock)."
    )
    updated_at = models.DateTimeField(auto_now=True, help_text="When the last chunk arrived.")
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="Set once no more chunks are accepted (the chunks are merged)."
    )
    playable_name = models.CharField(
        max_length=255, blank=True, help_text="Storage name of the seekable copy; empty until made."
    )
    playable_source_size = models.PositiveBigIntegerField(
        default=0, help_text="How many received bytes the seekable copy covers (stale when < size)."
    )
    duration_s = models.FloatField(null=True, blank=True, help_text="Length of the seekable copy.")

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"recording of {self.call_id}"

    @property
    def is_finished(self) -> bool:
        return self.finished_at is not None


class Event(models.Model):
    """One Realtime API event seen on a call, stored as received (unknown types included)."""

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="events")
    sequence = models.PositiveIntegerField(help_text="Order of arrival within the call, from 1.")
    type = models.CharField(max_length=100, db_index=True)
    payload = models.JSONField(default=dict)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["call", "sequence"]
        constraints = [models.UniqueConstraint(fields=["call", "sequence"], name="calls_event_call_sequence")]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.type}"


class TranscriptTurn(models.Model):
    """One conversation item's text: what the user said or what the assistant answered."""

    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="turns")
    item_id = models.CharField(max_length=64, help_text="The conversation item id (item_…).")
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    interrupted = models.BooleanField(default=False, help_text="The user spoke over this reply.")

    class Meta:
        ordering = ["call", "started_at", "id"]
        constraints = [models.UniqueConstraint(fields=["call", "item_id"], name="calls_turn_call_item")]

    def __str__(self) -> str:
        return f"{self.role} {self.item_id}"


class ToolInvocation(models.Model):
    """A function call the model made during a call, and what our tool answered."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="tool_invocations")
    # Named function_call_id because `call_id` is the attribute of the `call` foreign key.
    function_call_id = models.CharField(max_length=64, help_text="The API's call_id of the function call.")
    tool_name = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict, blank=True)
    output = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["call", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["call", "function_call_id"], name="calls_tool_call_function_call")
        ]

    def __str__(self) -> str:
        return f"{self.tool_name} ({self.function_call_id})"


class WebhookDelivery(models.Model):
    """A signed webhook we received; the unique webhook id makes a replay a no-op."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted", "Call accepted"
        REJECTED = "rejected", "Call rejected"
        IGNORED = "ignored", "Ignored"
        FAILED = "failed", "Failed"

    webhook_id = models.CharField(max_length=128, unique=True)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    call = models.ForeignKey(
        Call, on_delete=models.SET_NULL, null=True, blank=True, related_name="webhook_deliveries"
    )
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.IGNORED)

    class Meta:
        ordering = ["-received_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.type} {self.webhook_id}"


#: Letters, digits, '-' and '_', without a double underscore (the namespace separator).
MCP_NAME_RE = re.compile(r"(?!.*__)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,22}[A-Za-z0-9])?")


def _validate_mcp_name(value: str) -> None:
    """Server names prefix tool names (``name__tool``), so they must fit the API's function name rules."""
    from django.core.exceptions import ValidationError

    if not MCP_NAME_RE.fullmatch(value):
        raise ValidationError(
            "Use letters, digits, '-' or single '_' (no '__'), up to 24 characters: the name prefixes "
            "the server's tool names, e.g. weather__get_weather."
        )


class McpServer(models.Model):
    """An MCP server whose tools the observer offers to the model on calls of the linked profiles.

    The observer connects at call start (stdio: it spawns ``command``; streamable HTTP: it connects to
    ``url`` with ``headers``), lists the tools, offers them namespaced as ``<name>__<tool>``, and closes
    the session when the call ends. ``headers`` usually carry credentials: the admin never lists them.
    """

    class Transport(models.TextChoices):
        STDIO = "stdio", "stdio (subprocess)"
        STREAMABLE_HTTP = "streamable-http", "Streamable HTTP"

    name = models.CharField(
        max_length=24,
        unique=True,
        validators=[_validate_mcp_name],
        help_text="Prefixes the tool names offered to the model (weather → weather__get_weather).",
    )
    transport = models.CharField(max_length=16, choices=Transport.choices, default=Transport.STDIO)
    command = models.CharField(max_length=500, blank=True, help_text="stdio: the executable to run.")
    args = models.JSONField(
        default=list, blank=True, help_text='stdio: arguments, a JSON list ["-m", "server"].'
    )
    url = models.URLField(max_length=500, blank=True, help_text="Streamable HTTP: the endpoint, e.g. …/mcp.")
    headers = models.JSONField(
        default=dict, blank=True, help_text="Streamable HTTP: request headers (JSON object); kept secret."
    )
    enabled = models.BooleanField(default=True)
    allowed_tools = models.JSONField(
        default=list,
        blank=True,
        help_text="Tool names (as the server names them) to offer; empty offers all.",
    )
    timeout_s = models.FloatField(
        default=10.0, help_text="Bound on connecting, and on each tool call, in seconds."
    )
    agents = models.ManyToManyField(
        AgentProfile,
        related_name="mcp_servers",
        blank=True,
        help_text="The agent profiles that offer this server's tools.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP server"
        constraints = [
            models.CheckConstraint(condition=Q(timeout_s__gt=0), name="calls_mcpserver_timeout_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Each transport needs its own target; JSON fields need the right shapes."""
        from django.core.exceptions import ValidationError

        errors: dict[str, str] = {}
        if self.transport == self.Transport.STDIO and not self.command.strip():
            errors["command"] = "A stdio server needs a command."
        if self.transport == self.Transport.STREAMABLE_HTTP and not self.url.strip():
            errors["url"] = "A streamable HTTP server needs a URL."
        if not isinstance(self.args, list) or not all(isinstance(a, str) for a in self.args):
            errors["args"] = "A JSON list of strings."
        if not isinstance(self.headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            errors["headers"] = "A JSON object of string values."
        if not isinstance(self.allowed_tools, list) or not all(
            isinstance(t, str) for t in self.allowed_tools
        ):
            errors["allowed_tools"] = "A JSON list of tool names."
        if errors:
            raise ValidationError(errors)


class ObserverLease(models.Model):
    """Which observer worker watches a live call, until when (calls.observer.lease; docs/scaling.md).

    One row per call that was ever claimed. A worker claims an expired (or new) row by raising its
    `epoch`; every observer write checks `owner` and `epoch` in its own transaction (fencing), so a
    worker that lost the lease (paused, cut off) can no longer write anything about the call.
    """

    call = models.OneToOneField(
        Call, on_delete=models.CASCADE, primary_key=True, related_name="observer_lease"
    )
    owner = models.CharField(max_length=100, blank=True, help_text="The worker instance holding the lease.")
    epoch = models.PositiveBigIntegerField(default=0, help_text="Raised by every claim (the fencing token).")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"lease of {self.call_id} by {self.owner or 'nobody'} (epoch {self.epoch})"
