"""A call's recording: the console uploads it in chunks, the call page and the admin play it back.

    POST /calls/<uuid>/recording?offset=N[&final=1][&elapsed_ms=M]
        the call's owner (staff); body = the next bytes of the WebM stream (Content-Type audio/webm);
        CSRF token in X-CSRFToken, as every console request. Appended only when N is the size held.
        200 {enabled, size, chunks, finished, duration_s} + Upload-Offset: <size>
        409 offset_mismatch / recording_finished, with "size" and Upload-Offset · 413 chunk or
        recording too large (RECORDING_MAX_CHUNK_BYTES / RECORDING_MAX_BYTES) · 403 recording_off
        (the agent profile's switch) · 415 not WebM · 404 not the user's call · 401/403 not staff
    HEAD /calls/<uuid>/recording
        owner or admin reviewer; no body; Upload-Offset: <size held> (0 when none), X-Recording-Enabled,
        X-Recording-Finished: where a reloaded console resumes.
    GET /calls/<uuid>/recording
        owner or admin reviewer (staff with the admin's "view call" permission); the seekable WebM,
        with single-range `Range: bytes=` support (206/416) so the player can seek; 404 when none.

Errors are the JSON shape of the other call endpoints: {"error": {"message", "code"}}.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.http import require_http_methods

from calls import selectors
from calls.models import Call
from calls.services import recordings
from calls.views.api import api_staff_required, json_error, request_user
from voiceagent.security import body_cap


def _offset_headers(response: HttpResponseBase, state: recordings.RecordingState) -> None:
    response["Upload-Offset"] = str(state.size)
    response["X-Recording-Enabled"] = "true" if state.enabled else "false"
    response["X-Recording-Finished"] = "true" if state.finished else "false"
    response["Cache-Control"] = "no-store"


def _error(exc: recordings.RecordingError) -> JsonResponse:
    response = json_error(exc.status, exc.message, code=exc.code)
    if exc.size is not None:
        response.content = JsonResponse(
            {"error": {"message": exc.message, "code": exc.code}, "size": exc.size}
        ).content
        response["Upload-Offset"] = str(exc.size)
    return response


async def _call(user: User, call_id: uuid.UUID, *, upload: bool) -> Call | None:
    try:
        return await sync_to_async(selectors.get_recording_call)(user=user, call_id=call_id, upload=upload)
    except Http404:
        return None


def _int_param(request: HttpRequest, name: str) -> int | None:
    raw = request.GET.get(name, "")
    return int(raw) if raw.isdigit() else None


# A chunk at most: the body cap middleware (voiceagent/security.py) refuses more before the view runs.
@body_cap("RECORDING_MAX_CHUNK_BYTES", code="chunk_too_large")
@require_http_methods(["GET", "HEAD", "POST"])
@api_staff_required
async def call_recording(request: HttpRequest, call_id: uuid.UUID) -> HttpResponseBase:
    """Upload (POST), resume point (HEAD) or playback (GET) of one call's recording."""
    user = await request_user(request)
    call = await _call(user, call_id, upload=request.method == "POST")
    if call is None:
        return json_error(404, "No such call.", code="not_found")
    if request.method == "POST":
        return await _upload(request, call)
    if request.method == "HEAD":
        state = await sync_to_async(recordings.recording_state)(call=call)
        response = HttpResponse()
        _offset_headers(response, state)
        return response
    return await _playback(request, call)


async def _upload(request: HttpRequest, call: Call) -> HttpResponseBase:
    offset = _int_param(request, "offset")
    if offset is None:
        return json_error(400, "'offset' (the chunk's first byte) is required.", code="invalid_offset")
    cap = settings.RECORDING_MAX_CHUNK_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if declared.isdigit() and int(declared) > cap:
        return json_error(413, f"A chunk may be at most {cap} bytes.", code="chunk_too_large")
    data = request.read(cap + 1)
    if len(data) > cap:
        return json_error(413, f"A chunk may be at most {cap} bytes.", code="chunk_too_large")
    try:
        await sync_to_async(recordings.append_chunk)(
            call=call,
            offset=offset,
            data=data,
            content_type=request.META.get("CONTENT_TYPE", ""),
            elapsed_ms=_int_param(request, "elapsed_ms"),
            final=request.GET.get("final") in ("1", "true"),
        )
    except recordings.RecordingError as exc:
        return _error(exc)
    state = await sync_to_async(recordings.recording_state)(call=call)
    response = JsonResponse(state.as_json())
    _offset_headers(response, state)
    return response


def _next_block(blocks: Iterator[bytes]) -> bytes:
    return next(blocks, b"")


async def _stream(blocks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Storage reads are blocking: each block is read in a worker thread."""
    while True:
        block = await sync_to_async(_next_block, thread_sensitive=False)(blocks)
        if not block:
            return
        yield block


async def _playback(request: HttpRequest, call: Call) -> HttpResponseBase:
    try:
        recording = await sync_to_async(recordings.playable_recording)(call=call)
    except recordings.RecordingError as exc:
        return _error(exc)
    storage = recordings.recording_storage()
    size = await sync_to_async(storage.size)(recording.playable_name)
    try:
        wanted = recordings.parse_range(request.META.get("HTTP_RANGE"), size)
    except recordings.UnsatisfiableRange:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    start, end = wanted if wanted is not None else (0, size - 1)
    streaming = StreamingHttpResponse(
        _stream(recordings.read_range(recording.playable_name, start, end)),
        status=206 if wanted is not None else 200,
        content_type=recordings.PLAYABLE_CONTENT_TYPE,
    )
    streaming["Content-Length"] = str(end - start + 1)
    streaming["Accept-Ranges"] = "bytes"
    if wanted is not None:
        streaming["Content-Range"] = f"bytes {start}-{end}/{size}"
    streaming["Content-Disposition"] = f'inline; filename="call-{call.pk}.webm"'
    streaming["Cache-Control"] = "private, no-cache"
    if recording.duration_s is not None:
        streaming["X-Recording-Duration"] = f"{recording.duration_s:.3f}"
    return streaming
