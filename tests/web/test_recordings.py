"""Call recordings: chunked, resumable uploads by the call's owner; seekable playback with ranges.

The audio is a real WebM/Opus stream made by PyAV the way MediaRecorder writes it (to a pipe: no
duration, no cues), cut into chunks at arbitrary byte boundaries as the browser's timeslices are.
Files go to a per-test MEDIA_ROOT through Django's default storage.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import Call, CallRecording
from calls.services import recordings
from tests.factories import (
    PASSWORD,
    AgentProfileFactory,
    CallFactory,
    StaffUserFactory,
    TranscriptTurnFactory,
)

pytestmark = pytest.mark.django_db

WEBM = "audio/webm;codecs=opus"
SECONDS = 6.0


class _Pipe(io.RawIOBase):
    """A write-only, unseekable sink: the muxer cannot go back to write a duration or cues."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


def recorder_webm(seconds: float) -> bytes:
    """A 440 Hz tone as Opus in a streamed WebM, like MediaRecorder's."""
    pipe = _Pipe()
    with av.open(pipe, mode="w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        total, at = int(seconds * 48000), 0
        while at < total:
            n = min(960, total - at)
            samples = 0.3 * np.sin(2 * math.pi * 440 * np.arange(at, at + n) / 48000)
            pcm = samples.astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(pcm, format="flt", layout="mono")
            frame.sample_rate = 48000
            frame.pts = at
            for packet in stream.encode(frame):
                out.mux(packet)
            at += n
        for packet in stream.encode(None):
            out.mux(packet)
    return bytes(pipe.data)


@pytest.fixture(scope="module")
def webm() -> bytes:
    return recorder_webm(SECONDS)


@pytest.fixture(autouse=True)
def media_root(settings: SettingsWrapper, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def chunks_of(data: bytes, count: int) -> list[bytes]:
    size = math.ceil(len(data) / count)
    return [data[i : i + size] for i in range(0, len(data), size)]


def url(call: Call) -> str:
    return f"/calls/{call.pk}/recording"


def post(client: Client, call: Call, offset: int, data: bytes, **params: str) -> Any:
    query = "&".join([f"offset={offset}", *(f"{k}={v}" for k, v in params.items())])
    return client.post(f"{url(call)}?{query}", data=data, content_type=WEBM)


def upload_all(client: Client, call: Call, data: bytes, *, parts: int = 3, final: bool = False) -> None:
    offset = 0
    pieces = chunks_of(data, parts)
    for index, piece in enumerate(pieces):
        extra = {"final": "1"} if final and index == len(pieces) - 1 else {}
        response = post(client, call, offset, piece, **extra)
        assert response.status_code == 200, response.content
        offset += len(piece)
        assert response.json()["size"] == offset
        assert response["Upload-Offset"] == str(offset)


def body_of(response: Any) -> bytes:
    """The whole body of a (streaming, async) response."""
    if not getattr(response, "streaming", False):
        return bytes(response.content)

    async def read() -> bytes:
        return b"".join([block async for block in response.streaming_content])

    return async_to_sync(read)()


def duration_of(body: bytes) -> float:
    with av.open(io.BytesIO(body), mode="r") as container:
        assert container.duration is not None, "the served file has no duration"
        return float(container.duration / 1_000_000)


def signed_in(user: User) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def call(staff_user: User) -> Call:
    created: Call = CallFactory.create(user=staff_user, status=Call.Status.ACTIVE, ended_at=None)
    return created


# ---- upload ---------------------------------------------------------------------------------------


def test_chunks_uploaded_in_order_play_back_seekable_with_the_recorded_duration(
    staff_client: Client, call: Call, webm: bytes
) -> None:
    upload_all(staff_client, call, webm, parts=4)
    response = staff_client.get(url(call))
    assert response.status_code == 200
    assert response["Content-Type"] == "audio/webm"
    assert response["Accept-Ranges"] == "bytes"
    body = body_of(response)
    assert int(response["Content-Length"]) == len(body)
    assert abs(duration_of(body) - SECONDS) < 0.05 * SECONDS
    recording = CallRecording.objects.get(call=call)
    assert recording.duration_s == pytest.approx(SECONDS, rel=0.05)
    assert recording.chunk_count == 4 and recording.size == len(webm)
    assert not recording.is_finished  # the call is live: more may come


def test_a_chunk_at_the_wrong_offset_is_refused_with_the_size_held(
    staff_client: Client, call: Call, webm: bytes
) -> None:
    first, second, _ = chunks_of(webm, 3)
    assert post(staff_client, call, 0, first).status_code == 200
    response = post(staff_client, call, len(first) + 5, second)
    assert response.status_code == 409
    assert response.json()["size"] == len(first)
    assert response.json()["error"]["code"] == "offset_mismatch"
    assert response["Upload-Offset"] == str(len(first))
    assert CallRecording.objects.get(call=call).size == len(first)


def test_a_repeated_chunk_is_not_appended_twice(staff_client: Client, call: Call, webm: bytes) -> None:
    first, second, _ = chunks_of(webm, 3)
    post(staff_client, call, 0, first)
    assert post(staff_client, call, len(first), second).status_code == 200
    again = post(staff_client, call, len(first), second)  # a retry whose first answer was lost
    assert again.status_code == 409
    assert again.json()["size"] == len(first) + len(second)


def test_a_reloaded_console_learns_where_to_resume_and_the_whole_stream_plays(
    staff_client: Client, call: Call, webm: bytes
) -> None:
    first, second, third = chunks_of(webm, 3)
    post(staff_client, call, 0, first)
    post(staff_client, call, len(first), second)
    head = staff_client.head(url(call))
    assert head.status_code == 200
    assert head["Upload-Offset"] == str(len(first) + len(second))
    assert head["X-Recording-Enabled"] == "true"
    resumed = post(staff_client, call, int(head["Upload-Offset"]), third, final="1")
    assert resumed.status_code == 200 and resumed.json()["finished"] is True
    body = body_of(staff_client.get(url(call)))
    assert abs(duration_of(body) - SECONDS) < 0.05 * SECONDS


def test_what_was_uploaded_before_a_crash_plays_once_the_call_ended(
    staff_client: Client, call: Call, webm: bytes
) -> None:
    pieces = chunks_of(webm, 3)
    post(staff_client, call, 0, pieces[0])
    post(staff_client, call, len(pieces[0]), pieces[1])  # then the tab died: no final request
    Call.objects.filter(pk=call.pk).update(status=Call.Status.ENDED)
    body = body_of(staff_client.get(url(call)))
    assert 0.5 * SECONDS < duration_of(body) < SECONDS
    recording = CallRecording.objects.get(call=call)
    assert recording.is_finished  # the call is over: closed, chunks merged
    late = post(staff_client, call, recording.size, pieces[2])
    assert late.status_code == 409 and late.json()["error"]["code"] == "recording_finished"


def test_finishing_merges_and_removes_the_chunks(
    staff_client: Client, call: Call, webm: bytes, media_root: Path
) -> None:
    upload_all(staff_client, call, webm, parts=3, final=True)
    recording = CallRecording.objects.get(call=call)
    assert recording.is_finished
    assert not list((media_root / "recordings" / str(call.pk) / "chunks").iterdir())
    assert (media_root / recording.playable_name).is_file()


def test_the_first_chunk_dates_the_recording_from_the_browsers_elapsed_time(
    staff_client: Client, call: Call, webm: bytes
) -> None:
    response = post(staff_client, call, 0, webm[:4000], elapsed_ms="2500")
    assert response.status_code == 200
    recording = CallRecording.objects.get(call=call)
    assert 2.4 < (recording.updated_at - recording.started_at).total_seconds() < 10


def test_an_empty_chunk_is_refused_unless_it_finishes(staff_client: Client, call: Call, webm: bytes) -> None:
    assert post(staff_client, call, 0, b"").status_code == 400
    post(staff_client, call, 0, webm)
    assert post(staff_client, call, len(webm), b"", final="1").json()["finished"] is True


def test_a_missing_offset_is_a_bad_request(staff_client: Client, call: Call) -> None:
    response = staff_client.post(url(call), data=b"x", content_type=WEBM)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_offset"


def test_only_webm_is_accepted(staff_client: Client, call: Call) -> None:
    response = staff_client.post(f"{url(call)}?offset=0", data=b"\x00" * 100, content_type="audio/mp4")
    assert response.status_code == 415
    assert not CallRecording.objects.filter(call=call).exists()


# ---- limits ---------------------------------------------------------------------------------------


def test_a_chunk_over_the_per_chunk_cap_is_refused(
    staff_client: Client, call: Call, webm: bytes, settings: SettingsWrapper
) -> None:
    settings.RECORDING_MAX_CHUNK_BYTES = 1000
    response = post(staff_client, call, 0, webm[:1001])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "chunk_too_large"
    assert post(staff_client, call, 0, webm[:1000]).status_code == 200


def test_a_recording_cannot_grow_past_its_limit(
    staff_client: Client, call: Call, webm: bytes, settings: SettingsWrapper
) -> None:
    settings.RECORDING_MAX_BYTES = 5000
    assert post(staff_client, call, 0, webm[:3000]).status_code == 200
    response = post(staff_client, call, 3000, webm[3000:6000])
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "recording_too_large"
    assert CallRecording.objects.get(call=call).size == 3000


def test_a_profile_with_recording_off_refuses_uploads(
    staff_client: Client, staff_user: User, webm: bytes
) -> None:
    quiet = CallFactory.create(user=staff_user, agent=AgentProfileFactory.create(record_calls=False))
    response = post(staff_client, quiet, 0, webm[:2000])
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "recording_off"
    assert staff_client.head(url(quiet))["X-Recording-Enabled"] == "false"
    assert not CallRecording.objects.filter(call=quiet).exists()


# ---- who may upload and play ----------------------------------------------------------------------


def test_another_staff_user_can_neither_upload_to_nor_play_someone_elses_recording(
    staff_client: Client, call: Call, webm: bytes
) -> None:
    upload_all(staff_client, call, webm)
    other = signed_in(StaffUserFactory.create())
    assert post(other, call, len(webm), b"more").status_code == 404
    assert other.get(url(call)).status_code == 404
    assert other.head(url(call)).status_code == 404
    assert CallRecording.objects.get(call=call).size == len(webm)


def test_anonymous_and_non_staff_users_are_turned_away(
    client: Client, plain_user: User, call: Call, webm: bytes
) -> None:
    assert post(client, call, 0, webm).status_code == 401
    assert client.get(url(call)).status_code == 401
    own = CallFactory.create(user=plain_user)
    assert post(signed_in(plain_user), own, 0, webm).status_code == 403
    assert not CallRecording.objects.exists()


def test_admin_reviewers_may_play_but_not_upload(
    admin_client: Client, staff_client: Client, call: Call, webm: bytes
) -> None:
    upload_all(staff_client, call, webm)
    assert admin_client.get(url(call)).status_code == 200
    assert post(admin_client, call, len(webm), b"more").status_code == 404
    reviewer = StaffUserFactory.create()
    reviewer.user_permissions.add(Permission.objects.get(codename="view_call"))
    assert signed_in(reviewer).get(url(call)).status_code == 200


def test_uploads_need_the_csrf_token_like_every_console_request(
    staff_user: User, call: Call, webm: bytes
) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    refused = browser.post(f"{url(call)}?offset=0", data=webm[:2000], content_type=WEBM)
    assert refused.status_code == 403
    page = browser.get("/")
    token = page.context["csrf_token"]
    accepted = browser.post(
        f"{url(call)}?offset=0", data=webm[:2000], content_type=WEBM, headers={"X-CSRFToken": str(token)}
    )
    assert accepted.status_code == 200


# ---- ranges ---------------------------------------------------------------------------------------


def test_a_byte_range_is_served_partially(staff_client: Client, call: Call, webm: bytes) -> None:
    upload_all(staff_client, call, webm)
    whole = body_of(staff_client.get(url(call)))
    part = staff_client.get(url(call), headers={"Range": "bytes=100-299"})
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 100-299/{len(whole)}"
    assert body_of(part) == whole[100:300]
    tail = staff_client.get(url(call), headers={"Range": "bytes=-50"})
    assert body_of(tail) == whole[-50:]
    open_ended = staff_client.get(url(call), headers={"Range": f"bytes={len(whole) - 10}-"})
    assert body_of(open_ended) == whole[-10:]


def test_a_range_past_the_end_is_unsatisfiable(staff_client: Client, call: Call, webm: bytes) -> None:
    upload_all(staff_client, call, webm)
    response = staff_client.get(url(call), headers={"Range": "bytes=99999999-"})
    assert response.status_code == 416
    assert response["Content-Range"].startswith("bytes */")


def test_a_call_without_a_recording_has_nothing_to_play(staff_client: Client, call: Call) -> None:
    response = staff_client.get(url(call))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_recording"
    assert staff_client.head(url(call))["Upload-Offset"] == "0"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=90-500", (90, 99)),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
    ],
)
def test_range_headers_are_parsed_as_rfc_9110_says(
    header: str | None, expected: tuple[int, int] | None
) -> None:
    assert recordings.parse_range(header, 100) == expected


# ---- pages ----------------------------------------------------------------------------------------


def test_the_call_page_has_a_player_and_turns_link_to_their_offsets(
    staff_client: Client, call: Call, webm: bytes
) -> None:
    upload_all(staff_client, call, webm, final=True)
    recording = CallRecording.objects.get(call=call)
    import datetime as dt

    TranscriptTurnFactory.create(call=call, started_at=recording.started_at + dt.timedelta(seconds=3.5))
    body = staff_client.get(f"/calls/{call.pk}/").content.decode()
    assert f'src="/calls/{call.pk}/recording"' in body
    assert 'data-seek="3.500"' in body
    assert "0:03" in body


def test_the_admin_call_page_has_the_player(
    admin_client: Client, staff_client: Client, call: Call, webm: bytes
) -> None:
    upload_all(staff_client, call, webm, final=True)
    body = admin_client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert f'src="/calls/{call.pk}/recording"' in body


def test_the_console_tells_the_recorder_whether_the_profile_records(staff_client: Client) -> None:
    from calls.models import AgentProfile

    config = staff_client.get("/").context["client_config"]
    assert config["recordCalls"] is True
    AgentProfile.objects.filter(is_default=True).update(record_calls=False)
    assert staff_client.get("/").context["client_config"]["recordCalls"] is False


def test_deleting_a_call_in_the_admin_deletes_its_recording_files(
    admin_client: Client,
    staff_client: Client,
    call: Call,
    webm: bytes,
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    upload_all(staff_client, call, webm, final=True)
    folder = media_root / "recordings" / str(call.pk)
    assert any(folder.rglob("*.webm"))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/calls/call/{call.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Call.objects.filter(pk=call.pk).exists()
    assert not any(folder.rglob("*.webm"))


@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_at_the_same_offset_append_once(webm: bytes) -> None:
    """Retries racing each other (a slow answer, then the same chunk again): one wins, the others
    learn the new size; the stream is never doubled."""
    import threading

    from django.db import connection

    from calls.services.recordings import OffsetMismatch, append_chunk

    if connection.vendor == "sqlite":
        pytest.skip(
            "the test database is in-memory shared-cache SQLite, which fails concurrent writers at once "
            "instead of waiting (file SQLite waits its timeout); run with DATABASE_URL=postgres://…"
        )
    owner = StaffUserFactory.create()
    racing = CallFactory.create(user=owner, status=Call.Status.ACTIVE, ended_at=None)
    first, second = webm[:5000], webm[5000:10000]
    append_chunk(call=racing, offset=0, data=first, content_type=WEBM)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def upload() -> None:
        try:
            barrier.wait(timeout=10)
            append_chunk(call=racing, offset=len(first), data=second, content_type=WEBM)
            outcomes.append("appended")
        except OffsetMismatch as exc:
            outcomes.append(f"mismatch {exc.size}")
        finally:
            connection.close()

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["appended"] + [f"mismatch {len(first) + len(second)}"] * 3
    recording = CallRecording.objects.get(call=racing)
    assert (recording.size, recording.chunk_count) == (len(first) + len(second), 2)
