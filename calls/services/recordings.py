"""Call recordings: chunks uploaded during the call, one seekable file to play back.

The console's MediaRecorder produces one continuous WebM (Opus) stream cut into ~2 s blobs; it posts
them in order, each with the byte offset it starts at. A chunk is appended only when its offset is
the size already held (`OffsetMismatch`, answered 409 with the size, otherwise), so a retried or
duplicated request can never corrupt the stream, and a client that lost track asks for the size and
resumes there.

Storage: Django's storage API only (the "recordings" entry of STORAGES if configured, else
"default"). Object stores cannot append, so each chunk is its own object
(``recordings/<call>/chunks/<index>.webm``); appending takes a row lock on the `CallRecording` (an
UPDATE first, which PostgreSQL and SQLite both serialize), so two requests for the same offset cannot
both win.

Playback: MediaRecorder's WebM has no duration and no cues, so a player cannot seek it and shows
"Infinity". `ensure_playable` concatenates the chunks and remuxes them with PyAV (no re-encoding) into
a WebM written to a seekable temporary file, which makes libavformat's muxer write the duration and
the cues; that copy is stored as ``recordings/<call>/recording-<bytes>.webm`` and streamed with Range
support. A recording is *finished* when the browser says so (its last request has ``final``) or when
it is made playable after the call ended; then the chunks are deleted and later chunks are refused.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Final

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage, storages
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from calls.models import Call, CallRecording, TranscriptTurn

logger = logging.getLogger(__name__)

#: MediaRecorder's containers we can remux; Safari's audio/mp4 is not one of them (docs/web-calls.md).
ACCEPTED_CONTENT_TYPES: Final = ("audio/webm", "video/webm")
PLAYABLE_CONTENT_TYPE: Final = "audio/webm"
#: Bytes read from storage per block when streaming or merging.
BLOCK_BYTES: Final = 64 * 1024


class RecordingError(Exception):
    """A refused recording request; `status` and `code` are what the edge answers."""

    status = 400

    def __init__(self, message: str, *, code: str, size: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.size = size


class RecordingOff(RecordingError):
    """The call's agent profile has recording switched off."""

    status = 403


class OffsetMismatch(RecordingError):
    """The chunk does not start where the recording ends; `size` says where it does."""

    status = 409


class RecordingFinished(RecordingError):
    """The recording was finished (merged); nothing more can be appended."""

    status = 409


class RecordingTooLarge(RecordingError):
    """The chunk or the whole recording would exceed its limit."""

    status = 413


class UnsupportedRecording(RecordingError):
    """Not a container we can make playable."""

    status = 415


class NoRecording(RecordingError):
    """The call has no recording (yet)."""

    status = 404


def recording_storage() -> Storage:
    """The "recordings" storage when STORAGES names one (a private bucket), else the default one."""
    if "recordings" in settings.STORAGES:
        return storages["recordings"]
    return default_storage


def chunk_name(call: Call | CallRecording, index: int) -> str:
    call_id = call.pk
    return f"recordings/{call_id}/chunks/{index:06d}.webm"


def _playable_name(recording: CallRecording) -> str:
    return f"recordings/{recording.pk}/recording-{recording.size}.webm"


@dataclass(frozen=True)
class RecordingState:
    """What a (re)loaded console needs to resume, and what the player needs to know."""

    enabled: bool
    size: int
    chunk_count: int
    finished: bool
    duration_s: float | None

    def as_json(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "size": self.size,
            "chunks": self.chunk_count,
            "finished": self.finished,
            "duration_s": self.duration_s,
        }


def recording_state(*, call: Call) -> RecordingState:
    """The call's recording as the upload protocol sees it (size 0 when nothing was uploaded)."""
    recording = CallRecording.objects.filter(call=call).first()
    enabled = bool(call.agent.record_calls)
    if recording is None:
        return RecordingState(enabled=enabled, size=0, chunk_count=0, finished=False, duration_s=None)
    return RecordingState(
        enabled=enabled,
        size=recording.size,
        chunk_count=recording.chunk_count,
        finished=recording.is_finished,
        duration_s=recording.duration_s,
    )


def _check_content_type(content_type: str) -> str:
    base = content_type.split(";", 1)[0].strip().lower()
    if base not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedRecording(
            f"Recordings are WebM (audio/webm;codecs=opus), not {content_type or 'untyped data'}.",
            code="unsupported_media_type",
        )
    return content_type.strip()[:100]


def append_chunk(
    *,
    call: Call,
    offset: int,
    data: bytes,
    content_type: str,
    elapsed_ms: int | None = None,
    final: bool = False,
) -> CallRecording:
    """Append `data` at `offset` to the call's recording and return it; `final` finishes it.

    The first chunk (offset 0) creates the recording; `elapsed_ms` (how long the browser had been
    recording when it sent it) dates its start on the server's clock, which the transcript's turn
    offsets need. Raises `RecordingOff`, `OffsetMismatch` (with the size held), `RecordingFinished`,
    `RecordingTooLarge` or `UnsupportedRecording`. An empty `data` is allowed only with `final`.
    """
    if not call.agent.record_calls:
        raise RecordingOff("Recording is switched off for this agent profile.", code="recording_off")
    if not data and not final:
        raise RecordingError("The chunk is empty.", code="empty_chunk")
    if len(data) > settings.RECORDING_MAX_CHUNK_BYTES:
        raise RecordingTooLarge(
            f"A chunk may be at most {settings.RECORDING_MAX_CHUNK_BYTES} bytes.", code="chunk_too_large"
        )
    if offset + len(data) > settings.RECORDING_MAX_BYTES:
        raise RecordingTooLarge(
            f"A recording may be at most {settings.RECORDING_MAX_BYTES} bytes.",
            code="recording_too_large",
            size=offset,
        )
    storage = recording_storage()
    with transaction.atomic():
        if offset == 0 and data:
            started_at = timezone.now() - dt.timedelta(milliseconds=max(0, elapsed_ms or 0))
            CallRecording.objects.get_or_create(
                call=call,
                defaults={"content_type": _check_content_type(content_type), "started_at": started_at},
            )
        # The UPDATE takes the row's write lock (PostgreSQL row lock, SQLite's database lock) before
        # the size is read: concurrent requests for this recording are serialized from here on.
        locked = CallRecording.objects.filter(call=call).update(updated_at=timezone.now())
        if not locked:
            raise OffsetMismatch(
                "Nothing was recorded yet: the first chunk starts at offset 0.",
                code="offset_mismatch",
                size=0,
            )
        recording = CallRecording.objects.get(call=call)
        if recording.is_finished:
            raise RecordingFinished(
                "This recording is finished.", code="recording_finished", size=recording.size
            )
        if offset != recording.size:
            raise OffsetMismatch(
                f"The recording holds {recording.size} bytes; send the chunk that starts there.",
                code="offset_mismatch",
                size=recording.size,
            )
        if data:
            _check_content_type(content_type)
            name = chunk_name(recording, recording.chunk_count)
            if storage.exists(name):  # left by a request whose transaction did not commit
                storage.delete(name)
            stored = storage.save(name, ContentFile(data))
            if stored != name:
                storage.delete(stored)
                raise RecordingError("The storage renamed a chunk; check its settings.", code="storage")
            CallRecording.objects.filter(call=call).update(
                size=F("size") + len(data), chunk_count=F("chunk_count") + 1
            )
            recording.refresh_from_db()
    if final:
        recording = ensure_playable(recording=recording, finish=True)
    return recording


def _copy_chunks(recording: CallRecording, target: IO[bytes]) -> int:
    """Concatenate the recording's chunks into `target`; return the bytes written."""
    storage = recording_storage()
    written = 0
    for index in range(recording.chunk_count):
        with storage.open(chunk_name(recording, index), "rb") as chunk:
            while block := chunk.read(BLOCK_BYTES):
                target.write(block)
                written += len(block)
    return written


def remux_seekable(source: IO[bytes], target: IO[bytes]) -> float:
    """Copy the audio of the WebM stream `source` into a WebM in `target` (a real, seekable file) so
    that it has a duration and cues; return the duration in seconds. Packets are copied, not decoded.

    A stream cut short (a crash mid-call) ends at its last complete packet.
    """
    import av  # the [local] engine's media library, also a product dependency for this

    with av.open(source, mode="r", format="matroska,webm") as src:
        if not src.streams.audio:
            raise UnsupportedRecording("The recording has no audio track.", code="no_audio")
        audio = src.streams.audio[0]
        with av.open(target, mode="w", format="webm") as out:
            stream = out.add_stream_from_template(audio)
            first: int | None = None
            end = 0
            time_base: Fraction | None = None
            try:
                for packet in src.demux(audio):
                    if packet.dts is None or packet.pts is None:
                        continue  # the demuxer's flush packet
                    if first is None:
                        first = packet.pts
                    time_base = packet.time_base
                    end = max(end, packet.pts + (packet.duration or 0))
                    # Start at 0 whatever the recorder's first timestamp was.
                    packet.pts -= first
                    packet.dts -= first
                    packet.stream = stream
                    out.mux(packet)
            except (av.error.InvalidDataError, av.error.EOFError) as exc:
                logger.info("recording: stream ends mid-packet (%s); kept what was complete", exc)
    if first is None or time_base is None:
        return 0.0
    return float((end - first) * time_base)


def ensure_playable(*, recording: CallRecording, finish: bool = False) -> CallRecording:
    """Make the seekable copy of everything received, unless the current one already covers it.

    With `finish` (the browser's last request, or the call is over) the recording is closed: later
    chunks are refused and the chunks are deleted once the copy holds them. Concurrent callers may
    both remux; the one whose copy is stored first wins and the other's copy is deleted.
    """
    storage = recording_storage()
    finish = finish or recording.call.is_final
    stale = recording.size > 0 and (
        recording.playable_source_size != recording.size or not recording.playable_name
    )
    if stale and recording.chunk_count:
        covered = recording.size
        with tempfile.TemporaryFile() as raw, tempfile.NamedTemporaryFile(suffix=".webm") as seekable:
            _copy_chunks(recording, raw)
            raw.seek(0)
            duration = remux_seekable(raw, seekable)
            seekable.seek(0)
            stored = storage.save(_playable_name(recording), File(seekable))
        previous = recording.playable_name
        updated = CallRecording.objects.filter(
            pk=recording.pk, playable_name=previous, finished_at__isnull=True
        ).update(playable_name=stored, playable_source_size=covered, duration_s=duration)
        if not updated:
            storage.delete(stored)
        elif previous and previous != stored:
            storage.delete(previous)
        recording.refresh_from_db()
        logger.info("recording of call %s: %d bytes, %.1f s playable", recording.pk, covered, duration)
    if finish and not recording.is_finished and recording.playable_source_size == recording.size:
        closed = CallRecording.objects.filter(
            pk=recording.pk, finished_at__isnull=True, size=recording.size
        ).update(finished_at=timezone.now())
        if closed:
            for index in range(recording.chunk_count):
                storage.delete(chunk_name(recording, index))
        recording.refresh_from_db()
    return recording


def playable_recording(*, call: Call) -> CallRecording:
    """The call's recording with an up-to-date seekable copy (made now if needed); `NoRecording`
    when nothing was uploaded."""
    recording = CallRecording.objects.select_related("call").filter(call=call).first()
    if recording is None or recording.size == 0:
        raise NoRecording("This call has no recording.", code="no_recording")
    return ensure_playable(recording=recording)


# ---- byte ranges ---------------------------------------------------------------------------------

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class UnsatisfiableRange(Exception):
    """The Range header asks for bytes the file does not have (answered 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (start, end) of a single `bytes=` range, or None to send the whole file.

    Multiple ranges and malformed headers are ignored (the whole file, as RFC 9110 allows); a range
    past the end raises `UnsatisfiableRange`.
    """
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            raise UnsatisfiableRange
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise UnsatisfiableRange
    return start, end


def read_range(name: str, start: int, end: int) -> Iterator[bytes]:
    """Blocks of the stored file `name` from `start` to `end` inclusive."""
    remaining = end - start + 1
    with recording_storage().open(name, "rb") as handle:
        handle.seek(start)
        while remaining > 0:
            block = handle.read(min(BLOCK_BYTES, remaining))
            if not block:
                break
            remaining -= len(block)
            yield block


# ---- transcript offsets --------------------------------------------------------------------------


def turn_offset_s(*, turn: TranscriptTurn, recording: CallRecording | None) -> float | None:
    """Where `turn` starts in the recording, in seconds (None without a playable recording)."""
    if recording is None or recording.size == 0:
        return None
    offset = (turn.started_at - recording.started_at).total_seconds()
    if recording.duration_s is not None and offset > recording.duration_s:
        return None
    return max(0.0, offset)


def delete_recording_files(*, recording: CallRecording) -> None:
    """Remove every stored object of a recording (retention: deleting a call deletes its audio)."""
    storage = recording_storage()
    for index in range(recording.chunk_count):
        storage.delete(chunk_name(recording, index))
    if recording.playable_name:
        storage.delete(recording.playable_name)


def delete_recordings_with_calls(*, call_ids: Iterable[object]) -> None:
    """Before calls are deleted: remove their recordings' files once the deletion commits (the rows go
    with the calls, by cascade). Files are not removed if the deletion rolls back."""
    doomed = list(CallRecording.objects.filter(call_id__in=list(call_ids)))

    def remove() -> None:
        for recording in doomed:
            delete_recording_files(recording=recording)

    if doomed:
        transaction.on_commit(remove)
