"""`{% turn_seek_link turn recording %}`: a transcript turn's time in the call's recording, as a link
that seeks the page's player (static/console/recording-player.js); nothing without a recording."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from calls.models import CallRecording, TranscriptTurn
from calls.services.recordings import turn_offset_s

register = template.Library()


@register.simple_tag
def turn_seek_link(turn: TranscriptTurn, recording: CallRecording | None) -> SafeString | str:
    offset = turn_offset_s(turn=turn, recording=recording)
    if offset is None:
        return ""
    whole = int(offset)
    return format_html(
        '<a class="seek" href="#t={}" data-seek="{}" title="Play from here">▶ {}</a>',
        f"{offset:.1f}",
        f"{offset:.3f}",
        f"{whole // 60}:{whole % 60:02d}",
    )
