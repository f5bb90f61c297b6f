"""The admin is where admins review call history: calls with their transcript, events and tools.

History is read-only here: calls, events, transcript turns, tool invocations and webhook deliveries
can be viewed (and calls deleted, for retention), never added or edited. Agent profiles are editable.
Every list page runs a fixed number of queries whatever the number of rows.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import InlineModelAdmin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html

from calls import selectors
from calls.models import AgentProfile, Call, Event, McpServer, ToolInvocation, TranscriptTurn, WebhookDelivery
from calls.services.calls import hang_up_call
from calls.services.realtime_client import RealtimeError
from calls.services.recordings import delete_recordings_with_calls
from calls.templatetags.calls_format import format_duration

#: The end reason of a call an admin hung up (the console's button says "hung up by the user").
ADMIN_HANGUP_REASON = "hung up by an admin"
LIVE_STATUSES = (Call.Status.CONNECTING, Call.Status.ACTIVE)

admin.site.site_header = "voiceagent admin"
admin.site.site_title = "voiceagent admin"
admin.site.index_title = "Calls, agents and deliveries"
# The call list has many columns; the app sidebar would squeeze them on laptop screens.
admin.site.enable_nav_sidebar = False


class ReadOnlyAdminMixin:
    """History is written by the product alone: viewing is allowed, adding and editing are not."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _tool_choices() -> list[tuple[str, str]]:
    from calls.tools import registry

    return registry.choices()


class AgentProfileForm(forms.ModelForm[AgentProfile]):
    """Tools are ticked from the registered built-ins (a list of names is stored); a name that is no
    longer registered shows unticked and is dropped on save."""

    tools = forms.MultipleChoiceField(
        choices=_tool_choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Built-in tools this agent may call. A change applies to calls started afterwards.",
    )

    class Meta:
        model = AgentProfile
        fields = [
            "name",
            "is_default",
            "instructions",
            "voice",
            "model",
            "turn_detection",
            "max_call_duration",
            "tools",
            "phone_numbers",
            "transfer_targets",
            "record_calls",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            known = {name for name, _ in _tool_choices()}
            self.initial["tools"] = [name for name in self.instance.tools or [] if name in known]


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin[AgentProfile]):
    form = AgentProfileForm
    list_display = ["name", "is_default", "voice", "model", "record_calls", "updated_at"]
    list_filter = ["is_default", "voice", "model"]
    search_fields = ["name", "instructions"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "is_default", "instructions"]}),
        ("Voice and model", {"fields": ["voice", "model", "turn_detection"]}),
        ("Tools", {"fields": ["tools"]}),
        ("Phone", {"fields": ["phone_numbers", "transfer_targets"]}),
        ("Recording", {"fields": ["record_calls"]}),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]


class ToolInvocationInline(ReadOnlyAdminMixin, admin.TabularInline[ToolInvocation, Call]):
    model = ToolInvocation
    extra = 0
    can_delete = False
    fields = readonly_fields = (
        "created_at",
        "tool_name",
        "function_call_id",
        "status",
        "duration_ms",
        "arguments",
        "output",
    )
    ordering = ["created_at", "id"]
    verbose_name_plural = "Tool invocations"


class WebhookDeliveryInline(ReadOnlyAdminMixin, admin.TabularInline[WebhookDelivery, Call]):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    fields = readonly_fields = ("received_at", "type", "webhook_id", "outcome")
    verbose_name_plural = "Webhook deliveries"


@admin.register(Call)
class CallAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[Call]):
    list_display = [
        "started",
        "source",
        "mode",
        "status_badge",
        "agent_name",
        "who",
        "duration_display",
        "turn_count_display",
        "event_count_display",
    ]
    list_display_links = ["started"]
    list_filter = [
        "source",
        "status",
        "mode",
        "transport",
        "agent",
        ("created_at", admin.DateFieldListFilter),
    ]
    date_hierarchy = "created_at"
    search_fields = ["caller_number", "callee_number", "provider_call_id", "turns__text", "=id"]
    search_help_text = "Caller or dialled number, provider call id, transcript text, or an exact call id."
    actions = ["hang_up"]
    list_per_page = 50
    show_full_result_count = False
    inlines = [ToolInvocationInline, WebhookDeliveryInline]

    def get_inlines(self, request: HttpRequest, obj: Call | None) -> list[type[InlineModelAdmin[Any, Any]]]:
        """Webhook deliveries only exist for phone calls; web calls do not show the empty table."""
        if obj is not None and obj.source != Call.Source.SIP:
            return [ToolInvocationInline]
        return list(self.inlines)

    fieldsets = [
        (None, {"fields": ["id", "provider_call_id", "status", "end_reason", "error"]}),
        (
            "Who and how",
            {"fields": ["source", "mode", "transport", "user", "caller_number", "callee_number", "agent"]},
        ),
        ("SIP", {"fields": ["sip_headers"], "classes": ["collapse"]}),
        ("Timing", {"fields": ["created_at", "answered_at", "ended_at", "duration_display"]}),
        ("Usage", {"fields": ["usage"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["duration_display"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        return selectors.calls_with_counts(super().get_queryset(request))

    def delete_model(self, request: HttpRequest, obj: Call) -> None:
        """Retention: a deleted call takes its recording's files with it."""
        delete_recordings_with_calls(call_ids=[obj.pk])
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        delete_recordings_with_calls(call_ids=list(queryset.values_list("pk", flat=True)))
        super().delete_queryset(request, queryset)

    def has_hang_up_permission(self, request: HttpRequest) -> bool:
        """Staff who may see calls may end live ones (the console's hang-up button has the same rule)."""
        return bool(request.user.is_staff) and self.has_view_permission(request)

    @admin.action(description="Hang up selected live calls", permissions=["hang_up"])
    def hang_up(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        """End each selected call that is still live, through the lifecycle service (upstream hang-up,
        status `ended` with the reason, observer told); finished calls are left as they are."""
        live = list(Call.objects.filter(pk__in=queryset.values("pk"), status__in=LIVE_STATUSES))
        failed = 0
        for call in live:
            try:
                async_to_sync(hang_up_call)(call=call, reason=ADMIN_HANGUP_REASON)
            except RealtimeError as exc:
                failed += 1
                self.message_user(
                    request, f"Call {call.id} could not be hung up: {exc.message}", messages.ERROR
                )
        done = len(live) - failed
        if done:
            self.message_user(request, f"Hung up {done} call{'s' if done != 1 else ''}.", messages.SUCCESS)
        elif not failed:
            self.message_user(request, "None of the selected calls is live.", messages.WARNING)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Add the conversation and the event stream below the call's fields."""
        call = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if call is not None:
            context["transcript_turns"] = selectors.call_transcript(call=call)
            context["call_events"] = selectors.call_events(call=call)
            context["recording"] = selectors.call_recording(call=call)
        return super().change_view(request, object_id, form_url, extra_context=context)

    @admin.display(description="Started", ordering="created_at")
    def started(self, obj: Call) -> str:
        return timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Call) -> str:
        return format_html(
            '<span class="call-status call-status-{}">{}</span>', obj.status, obj.get_status_display()
        )

    @admin.display(description="Agent", ordering="agent__name")
    def agent_name(self, obj: Call) -> str:
        return obj.agent.name

    @admin.display(description="User / caller")
    def who(self, obj: Call) -> str:
        if obj.caller_number:
            return obj.caller_number
        return obj.user.get_username() if obj.user else "—"

    @admin.display(description="Duration")
    def duration_display(self, obj: Call) -> str:
        return format_duration(obj.duration)

    @admin.display(description="Turns", ordering="turn_count")
    def turn_count_display(self, obj: Call) -> int:
        return int(getattr(obj, "turn_count", 0))

    @admin.display(description="Events", ordering="event_count")
    def event_count_display(self, obj: Call) -> int:
        return int(getattr(obj, "event_count", 0))


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[Event]):
    list_display = ["call", "sequence", "type", "received_at"]
    list_filter = ["type"]
    search_fields = ["=call__id", "=call__provider_call_id", "type"]
    list_select_related = ["call", "call__user"]
    ordering = ["-received_at", "-sequence"]
    show_full_result_count = False
    fields = ["call", "sequence", "type", "received_at", "payload_pretty"]
    readonly_fields = ["payload_pretty"]

    @admin.display(description="Payload")
    def payload_pretty(self, obj: Event) -> str:
        from calls.templatetags.calls_format import pretty_json

        return format_html('<pre class="event-payload">{}</pre>', pretty_json(obj.payload))


@admin.register(TranscriptTurn)
class TranscriptTurnAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[TranscriptTurn]):
    list_display = ["call", "role", "short_text", "started_at", "interrupted"]
    list_filter = ["role", "interrupted"]
    search_fields = ["text", "=call__id"]
    list_select_related = ["call", "call__user"]
    ordering = ["-started_at"]
    show_full_result_count = False

    @admin.display(description="Text")
    def short_text(self, obj: TranscriptTurn) -> str:
        return obj.text if len(obj.text) <= 80 else obj.text[:79] + "…"


@admin.register(ToolInvocation)
class ToolInvocationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[ToolInvocation]):
    list_display = ["call", "tool_name", "status", "duration_ms", "created_at"]
    list_filter = ["status", "tool_name"]
    search_fields = ["tool_name", "function_call_id", "=call__id"]
    list_select_related = ["call", "call__user"]
    show_full_result_count = False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin[WebhookDelivery]):
    list_display = ["webhook_id", "type", "outcome", "received_at", "call"]
    list_filter = ["outcome", "type"]
    search_fields = ["webhook_id", "=call__id"]
    list_select_related = ["call", "call__user"]
    show_full_result_count = False


class McpServerForm(forms.ModelForm[McpServer]):
    """Headers are secrets: the form never shows the stored ones; an empty field keeps them."""

    headers = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text='Streamable HTTP request headers, a JSON object, e.g. {"Authorization": "Bearer …"}. '
        "The stored headers are never shown; leave empty to keep them, enter {} to remove them.",
    )

    url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text="Streamable HTTP: the endpoint, e.g. http://127.0.0.1:8765/mcp.",
    )

    class Meta:
        model = McpServer
        fields = [
            "name",
            "enabled",
            "transport",
            "timeout_s",
            "command",
            "args",
            "url",
            "headers",
            "allowed_tools",
            "agents",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["headers"] = None

    def clean_headers(self) -> Any:
        value = self.cleaned_data.get("headers")
        if value in (None, ""):
            return self.instance.headers if self.instance.pk else {}
        return value


#: Servers one "test connection" run may probe (each waits up to its timeout, in the request).
MAX_PROBES = 5


@admin.register(McpServer)
class McpServerAdmin(admin.ModelAdmin[McpServer]):
    form = McpServerForm
    list_display = ["name", "transport", "target", "enabled", "timeout_s", "updated_at"]
    list_filter = ["enabled", "transport"]
    search_fields = ["name", "command", "url"]
    readonly_fields = ["created_at", "updated_at"]
    filter_horizontal = ["agents"]
    actions = ["test_connection"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "transport", "timeout_s"]}),
        ("stdio", {"fields": ["command", "args"]}),
        ("Streamable HTTP", {"fields": ["url", "headers"]}),
        ("Tools", {"fields": ["allowed_tools", "agents"]}),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description="Command or URL")
    def target(self, obj: McpServer) -> str:
        """What the server runs or where it is; never the headers (they may hold credentials)."""
        if obj.transport == McpServer.Transport.STDIO:
            return " ".join([obj.command, *(str(arg) for arg in obj.args or [])])
        return obj.url

    @admin.action(description="Test connection (list the tools)")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[McpServer]) -> None:
        """Connect to each selected server (bounded by its timeout) and report the tools it lists."""
        from calls.tools import mcp

        servers = list(queryset.order_by("name")[: MAX_PROBES + 1])
        if len(servers) > MAX_PROBES:
            self.message_user(request, f"Testing the first {MAX_PROBES} servers only.", messages.WARNING)
            servers = servers[:MAX_PROBES]
        for server in servers:
            spec = mcp.ServerSpec.from_model(server)
            try:
                names = asyncio.run(mcp.probe(spec))
            except Exception as exc:
                reason = mcp.describe_failure(exc, spec.timeout_s)
                self.message_user(request, f"{server.name}: cannot connect ({reason}).", messages.ERROR)
                continue
            allowed = set(server.allowed_tools or [])
            shown = ", ".join(
                f"{name}" + ("" if not allowed or name in allowed else " (not allowed)") for name in names
            )
            self.message_user(
                request, f"{server.name}: {len(names)} tool(s): {shown or 'none'}.", messages.SUCCESS
            )
