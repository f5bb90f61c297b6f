"""The engine's HTTP and WebSocket surface: `create_app(config, runtime)` builds the aiohttp app.

Routes (base URL `/v1`, as OpenAI's; see docs/realtime_local.md "API"):

    GET  /healthz                                   no auth; 200 when ready, 503 while speech loads
    POST /v1/realtime/calls                         create a WebRTC call (multipart sdp+session, or raw SDP)
    GET  /v1/models                                 the models the engine answers as (a cheap key check)
    POST /v1/realtime/client_secrets                mint an `ek_` key bound to a session config
    POST /v1/realtime/calls/{call_id}/accept        SIP-style call control ...
    POST /v1/realtime/calls/{call_id}/reject
    POST /v1/realtime/calls/{call_id}/refer
    POST /v1/realtime/calls/{call_id}/hangup
    GET  /v1/realtime?call_id=…                     sideband WebSocket
    POST /v1/realtime/_local/incoming_calls         engine extension: a SIP-style incoming call without SIP

Why aiohttp: one library gives HTTP, WebSockets and a test server on the same loop as aiortc (which is
asyncio-native), with multipart parsing and body-size limits built in; an ASGI stack would add a
server process model and a framework for six routes. Handlers only parse, authorize and call one
operation on the call, the registry, the key store or the webhook sender; errors are `ApiError`s
rendered in the API's shape by one middleware.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from realtime_local.auth import Credential, EphemeralKeyStore, authenticate
from realtime_local.call import CallStateError, EngineRuntime, LocalCall, new_incoming_call, start_webrtc_call
from realtime_local.config import EngineConfig
from realtime_local.errors import ApiError, error_body, invalid_request, not_ready
from realtime_local.events import new_rtc_call_id
from realtime_local.registry import CallRegistry
from realtime_local.schemas import validate_session
from realtime_local.sideband import serve_sideband
from realtime_local.sip.uas import SipBindError, SipServer
from realtime_local.webhooks import WebhookSender, new_webhook_event_id

logger = logging.getLogger(__name__)

SpeechStatus = Literal["loading", "ready", "disabled", "unavailable", "failed"]

#: SIP status codes a rejection may carry (SIP final responses).
_SIP_STATUS_RANGE = range(400, 700)
_MAX_SIP_HEADERS = 64


@dataclass
class Engine:
    """The state of one running engine, reachable from handlers and from tests as `app[ENGINE]`."""

    config: EngineConfig
    runtime: EngineRuntime
    keys: EphemeralKeyStore
    started_at: float = field(default_factory=time.monotonic)
    speech_status: SpeechStatus = "disabled"
    speech_error: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the engine can take calls (speech loaded, failed to load, or disabled)."""
    ready_after: float | None = None
    """Seconds from app start to ready."""
    # Created on startup, inside the running loop:
    registry: CallRegistry | None = None
    webhooks: WebhookSender | None = None
    sip: SipServer | None = None
    """The SIP front door when `config.sip_port` is set (bound at startup)."""
    _loader: asyncio.Task[None] | None = None

    @property
    def calls(self) -> CallRegistry:
        if self.registry is None:
            raise RuntimeError("the engine app is not started")
        return self.registry

    @property
    def sender(self) -> WebhookSender:
        if self.webhooks is None:
            raise RuntimeError("the engine app is not started")
        return self.webhooks

    def require_ready(self) -> None:
        """Calls need the speech stack settled: 503 in the API's shape until then."""
        if not self.ready.is_set() or self.speech_status == "failed":
            raise not_ready(self.speech_status)


ENGINE = web.AppKey("realtime_local.engine", Engine)


def create_app(config: EngineConfig, runtime: EngineRuntime | None = None) -> web.Application:
    """Build the engine's aiohttp application.

    With `runtime` given (tests, or an embedding that loaded speech itself) the engine is ready at once.
    Without it, a runtime is built from `config` and, if `config.speech`, the speech stack is loaded in
    a thread at startup; `/healthz` answers 503 until it is ready. Usable with `web.AppRunner` on a
    TCP site, with aiohttp's test utilities, or embedded in another process (the Django test suite).
    """
    config.validate()
    preset = runtime is not None
    if runtime is None:
        runtime = EngineRuntime(
            speech=None, ice_servers=list(config.ice_servers), loopback_candidates=config.loopback_candidates
        )
    engine = Engine(
        config=config, runtime=runtime, keys=EphemeralKeyStore(max_outstanding=config.max_client_secrets)
    )
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_browser_cors, _api_errors])
    app[ENGINE] = engine

    async def on_startup(app: web.Application) -> None:
        engine.started_at = time.monotonic()
        engine.registry = CallRegistry(
            max_calls=config.max_calls,
            idle_timeout=config.idle_timeout,
            accept_timeout=config.accept_timeout,
            sweep_interval=config.sweep_interval,
        )
        engine.registry.start()
        engine.webhooks = WebhookSender(
            url=config.webhook_url,
            secret=config.webhook_secret,
            timeout=config.webhook_timeout,
            max_attempts=config.webhook_max_attempts,
            backoff=config.webhook_backoff,
        )
        if config.sip_port is not None:
            sip = SipServer(engine, host=config.sip_host, port=config.sip_port)
            try:
                await sip.start()
                engine.sip = sip
            except SipBindError as exc:
                if config.sip_required:
                    raise  # stops the startup: the CLI reports it and exits 1
                logger.error("SIP off: %s", exc.strerror)
        if preset:
            engine.speech_status = "ready" if engine.runtime.speech is not None else "disabled"
            _mark_ready(engine)
        elif config.speech:
            engine.speech_status = "loading"
            engine._loader = asyncio.get_running_loop().create_task(_load_speech(engine), name="speech-load")
        else:
            engine.speech_status = "disabled"
            _mark_ready(engine)

    async def on_shutdown(app: web.Application) -> None:
        # Runs before aiohttp waits for open handlers: hanging up closes the sideband sockets.
        if engine._loader is not None:
            engine._loader.cancel()
        if engine.registry is not None:
            await engine.registry.close()
        if engine.sip is not None:
            await engine.sip.close()

    async def on_cleanup(app: web.Application) -> None:
        if engine.webhooks is not None:
            await engine.webhooks.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)

    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/realtime/calls", create_call)
    app.router.add_route("OPTIONS", "/v1/realtime/calls", _preflight)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/realtime/client_secrets", create_client_secret)
    app.router.add_post("/v1/realtime/calls/{call_id}/accept", accept_call)
    app.router.add_post("/v1/realtime/calls/{call_id}/reject", reject_call)
    app.router.add_post("/v1/realtime/calls/{call_id}/refer", refer_call)
    app.router.add_post("/v1/realtime/calls/{call_id}/hangup", hangup_call)
    app.router.add_get("/v1/realtime", sideband)
    app.router.add_post("/v1/realtime/_local/incoming_calls", create_incoming_call)
    return app


async def _preflight(request: web.Request) -> web.Response:
    """Routed so that aiohttp does not answer 405 before the CORS middleware sees the preflight."""
    return web.Response(status=204, headers=CORS_HEADERS)


def _mark_ready(engine: Engine) -> None:
    engine.ready_after = time.monotonic() - engine.started_at
    engine.ready.set()


async def _load_speech(engine: Engine) -> None:
    """Load the speech stack in a thread (it reads ~200 MB of weights) and mark the engine ready."""
    try:
        # Imported here: the speech packages (faster-whisper, piper, onnxruntime) are the optional
        # `local` extra and slow to import; `--no-speech` and the protocol tests never need them.
        from realtime_local.speech.stack import SpeechOptions, load_speech_stack
    except ImportError as exc:
        logger.warning("speech stack not available (%s): running text-only", exc)
        engine.speech_status = "unavailable"
        engine.speech_error = str(exc)
        _mark_ready(engine)
        return
    try:
        options = SpeechOptions.from_env()
        engine.runtime.speech = await asyncio.to_thread(load_speech_stack, options)
    except Exception as exc:  # any failure to load is reported on /healthz and by the CLI
        logger.exception("loading the speech stack failed")
        engine.speech_status = "failed"
        engine.speech_error = f"{type(exc).__name__}: {exc}"
        engine.ready.set()
        return
    engine.speech_status = "ready"
    _mark_ready(engine)


# ---- middleware -----------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: Routes a browser calls cross-origin with an ephemeral key (the "direct" transport). Auth is the
#: bearer key in a header, never a cookie, so any origin may call them, as OpenAI's API allows.
BROWSER_ROUTES = frozenset({"/v1/realtime/calls"})
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Expose-Headers": "Location",
    "Access-Control-Max-Age": "600",
}


@web.middleware
async def _browser_cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights and label responses on the routes a browser calls directly."""
    if request.path not in BROWSER_ROUTES:
        return await handler(request)
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS_HEADERS)
    response = await handler(request)
    response.headers.update(CORS_HEADERS)
    return response


@web.middleware
async def _api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure in the API's error shape (the SDKs parse `error.message`/`code`)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge:
        return web.json_response(
            error_body("The request body is too large.", code="request_too_large"), status=413
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response(error_body(exc.reason, code=None), status=exc.status)
    except Exception:  # a bug must still answer in the API's shape, with the details in the log only
        logger.exception("internal error on %s %s", request.method, request.path)
        return web.json_response(
            error_body("The engine had an internal error; see its log.", type="server_error"), status=500
        )


# ---- helpers --------------------------------------------------------------------------------------


def _engine(request: web.Request) -> Engine:
    return request.app[ENGINE]


def _auth(request: web.Request, *, allow_ephemeral: bool = False) -> Credential:
    engine = _engine(request)
    return authenticate(
        request, api_key=engine.config.api_key, store=engine.keys, allow_ephemeral=allow_ephemeral
    )


async def _json_body(request: web.Request, *, required: bool) -> Any:
    """The request's JSON body; `{}` for an empty optional body; 400 when it is not JSON."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise invalid_request("The request body must be a JSON object.", code="invalid_json")
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid_request(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        ) from None


def _object_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_json")
    return body


def _reject_unknown(body: dict[str, Any], allowed: set[str], *, prefix: str = "") -> None:
    for name in body:
        if name not in allowed:
            param = f"{prefix}.{name}" if prefix else name
            raise invalid_request(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")


def _call(request: web.Request) -> LocalCall:
    return _engine(request).calls.get(request.match_info["call_id"])


# ---- routes ---------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Liveness/readiness for the process that started the engine (Django waits for 200)."""
    engine = _engine(request)
    if engine.speech_status == "failed":
        status = "failed"
    elif engine.ready.is_set():
        status = "ok"
    else:
        status = "loading"
    body = {
        "status": status,
        "speech": engine.speech_status,
        "speech_error": engine.speech_error,
        "calls_active": len(engine.registry) if engine.registry is not None else 0,
        "max_calls": engine.config.max_calls,
        "uptime_s": round(time.monotonic() - engine.started_at, 3),
        "ready_after_s": None if engine.ready_after is None else round(engine.ready_after, 3),
    }
    return web.json_response(body, status=200 if status == "ok" else 503)


async def create_call(request: web.Request) -> web.Response:
    """`POST /v1/realtime/calls`: answer a WebRTC offer (201, SDP answer, `Location`).

    Multipart (`sdp`, optional `session` JSON) or a raw `application/sdp` body. With an ephemeral key
    the session comes from the key (a multipart `session` replaces it); with the API key and no
    session the defaults apply.
    """
    engine = _engine(request)
    credential = _auth(request, allow_ephemeral=True)
    engine.require_ready()
    offer, raw_session = await _read_offer(request)
    if raw_session is not None:
        session = validate_session(raw_session)
    elif credential.ephemeral is not None:
        session = credential.ephemeral.session
    else:
        session = validate_session({})
    with engine.calls.reserve():
        key = credential.ephemeral
        if key is not None:
            engine.keys.check(key.value)  # still live after the body was read
            engine.keys.consume(key)
        call_id = new_rtc_call_id()
        try:
            call, answer = await start_webrtc_call(
                call_id=call_id, offer_sdp=offer, session=session, runtime=engine.runtime
            )
        except ValueError as exc:
            if key is not None:
                key.used = False  # the key was not spent on a call
            raise invalid_request(f"Invalid SDP offer: {exc}", param="sdp", code="invalid_offer") from None
        except BaseException:
            if key is not None:
                key.used = False
            raise
        engine.calls.add(call)
    logger.info("webrtc call %s created", call_id)
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"/v1/realtime/calls/{call_id}"},
    )


async def _read_offer(request: web.Request) -> tuple[str, Any | None]:
    """(offer SDP, raw session JSON or None) from a multipart or raw-SDP body, size-bounded."""
    if request.content_type == "multipart/form-data":
        form = await request.post()  # bounded by client_max_size
        sdp = _form_text(form.get("sdp"))
        if sdp is None:
            raise invalid_request(
                "Missing required parameter: 'sdp'.", param="sdp", code="missing_required_parameter"
            )
        session_text = _form_text(form.get("session"))
        raw_session: Any | None = None
        if session_text is not None:
            try:
                raw_session = json.loads(session_text)
            except ValueError:
                raise invalid_request("The 'session' part is not valid JSON.", param="session") from None
            if raw_session is None:
                raise invalid_request("Invalid type for 'session': expected an object.", param="session")
        offer = sdp
    elif request.content_type == "application/sdp":
        offer = (await request.read()).decode("utf-8", errors="replace")
        raw_session = None
    else:
        raise invalid_request(
            f"Unsupported content type '{request.content_type}': send multipart/form-data "
            "(fields 'sdp' and 'session') or application/sdp.",
            code="unsupported_content_type",
        )
    if not offer.lstrip().startswith("v=0"):
        raise invalid_request("The SDP offer must start with 'v=0'.", param="sdp", code="invalid_offer")
    return offer, raw_session


def _form_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    file = getattr(value, "file", None)  # a part sent with a filename arrives as a FileField
    if file is not None:
        data = file.read()
        return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
    return None


#: What `GET /v1/models` lists: the names the engine is usually asked for (it answers to any name).
LISTED_MODELS = ("gpt-realtime", "gpt-realtime-mini")


async def list_models(request: web.Request) -> web.Response:
    """`GET /v1/models` in OpenAI's list shape; needs the API key. `manage.py check_deployment` uses it
    to check the key and the reachability without starting a call (as it does against OpenAI)."""
    engine = _engine(request)
    _auth(request)
    created = int(time.time() - (time.monotonic() - engine.started_at))
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "realtime_local"}
        for name in LISTED_MODELS
    ]
    return web.json_response({"object": "list", "data": data})


async def create_client_secret(request: web.Request) -> web.Response:
    """`POST /v1/realtime/client_secrets`: mint a single-use `ek_` key bound to a session config."""
    engine = _engine(request)
    _auth(request)
    body = _object_body(await _json_body(request, required=False))
    _reject_unknown(body, {"session", "expires_after"})
    config = engine.config
    ttl = config.client_secret_default_ttl
    expires_after = body.get("expires_after")
    if expires_after is not None:
        if not isinstance(expires_after, dict):
            raise invalid_request(
                "Invalid type for 'expires_after': expected an object.", param="expires_after"
            )
        _reject_unknown(expires_after, {"anchor", "seconds"}, prefix="expires_after")
        if expires_after.get("anchor", "created_at") != "created_at":
            raise invalid_request(
                "Invalid value for 'expires_after.anchor': only 'created_at' is supported.",
                param="expires_after.anchor",
            )
        seconds = expires_after.get("seconds", ttl)
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise invalid_request(
                "Invalid type for 'expires_after.seconds': expected an integer.",
                param="expires_after.seconds",
            )
        if not config.client_secret_min_ttl <= seconds <= config.client_secret_max_ttl:
            raise invalid_request(
                f"Invalid value for 'expires_after.seconds': must be between {config.client_secret_min_ttl} "
                f"and {config.client_secret_max_ttl}.",
                param="expires_after.seconds",
            )
        ttl = seconds
    session = validate_session(body.get("session", {}))
    key = engine.keys.issue(session=session, ttl_seconds=ttl)
    return web.json_response(
        {
            "value": key.value,
            "expires_at": key.expires_at,
            "session": {
                "id": "sess_" + key.value.removeprefix("ek_")[:24],
                "object": "realtime.session",
                "expires_at": key.expires_at,
                **session,
            },
        }
    )


async def accept_call(request: web.Request) -> web.Response:
    """Accept an incoming SIP-style call with the session config in the body (`type` required)."""
    _auth(request)
    call = _call(request)
    session = validate_session(
        _object_body(await _json_body(request, required=True)), param="", require_type=True
    )
    try:
        await call.accept(session)
    except CallStateError as exc:
        raise invalid_request(f"Cannot accept call '{call.id}': {exc}.", code="invalid_call_state") from None
    return web.Response(status=200)


async def reject_call(request: web.Request) -> web.Response:
    """Reject an incoming SIP-style call with a SIP status code (default 603 Decline)."""
    _auth(request)
    call = _call(request)
    body = _object_body(await _json_body(request, required=False))
    _reject_unknown(body, {"status_code"})
    status_code = body.get("status_code", 603)
    if (
        isinstance(status_code, bool)
        or not isinstance(status_code, int)
        or status_code not in _SIP_STATUS_RANGE
    ):
        raise invalid_request(
            "Invalid value for 'status_code': expected a SIP final status between 400 and 699.",
            param="status_code",
        )
    try:
        await call.reject(status_code)
    except CallStateError as exc:
        raise invalid_request(f"Cannot reject call '{call.id}': {exc}.", code="invalid_call_state") from None
    return web.Response(status=200)


async def refer_call(request: web.Request) -> web.Response:
    """Transfer an active call to a `tel:` or `sip:` URI (the call ends here, reason `transferred`)."""
    _auth(request)
    call = _call(request)
    body = _object_body(await _json_body(request, required=True))
    _reject_unknown(body, {"target_uri"})
    target = body.get("target_uri")
    if not isinstance(target, str) or not target:
        raise invalid_request(
            "Missing required parameter: 'target_uri'.", param="target_uri", code="missing_required_parameter"
        )
    scheme, _, rest = target.partition(":")
    if scheme.lower() not in ("tel", "sip", "sips") or not rest or any(c.isspace() for c in target):
        raise invalid_request(
            "Invalid value for 'target_uri': expected a 'tel:' or 'sip:' URI.", param="target_uri"
        )
    try:
        await call.refer(target)
    except CallStateError as exc:
        raise invalid_request(f"Cannot refer call '{call.id}': {exc}.", code="invalid_call_state") from None
    return web.Response(status=200)


async def hangup_call(request: web.Request) -> web.Response:
    """End a call of any kind (idempotent while it is live; 404 once it is gone)."""
    _auth(request)
    call = _call(request)
    await call.hangup("hangup")
    return web.Response(status=200)


async def sideband(request: web.Request) -> web.StreamResponse:
    """`GET /v1/realtime?call_id=…`: attach a sideband WebSocket to a live call (API key only)."""
    engine = _engine(request)
    _auth(request)
    call_id = request.query.get("call_id")
    if not call_id:
        raise invalid_request(
            "Missing required parameter: 'call_id'. This engine only serves sideband connections to "
            "existing calls (GET /v1/realtime?call_id=...).",
            param="call_id",
            code="missing_required_parameter",
        )
    call = engine.calls.get(call_id)
    return await serve_sideband(
        request,
        call,
        queue_size=engine.config.sideband_queue_size,
        send_timeout=engine.config.sideband_send_timeout,
    )


async def create_incoming_call(request: web.Request) -> web.Response:
    """Engine extension: a SIP-style incoming call without SIP, announced by the signed webhook.

    Body (all optional): `{"from": "+1555…", "to": "+1555…", "sip_headers": [{"name", "value"}, …]}`.
    Answers `{"call_id", "webhook_id"}`; the call waits for accept/reject like a real SIP call.
    """
    engine = _engine(request)
    _auth(request)
    engine.require_ready()
    body = _object_body(await _json_body(request, required=False))
    _reject_unknown(body, {"from", "to", "sip_headers"})
    headers = _sip_headers(body)
    with engine.calls.reserve():
        call_id = new_rtc_call_id()
        call = new_incoming_call(call_id=call_id, runtime=engine.runtime, sip_headers=headers)
        engine.calls.add(call)
    delivery = engine.sender.send("realtime.call.incoming", {"call_id": call_id, "sip_headers": headers})
    logger.info("incoming call %s created (webhook %s)", call_id, delivery.event_id)
    return web.json_response({"call_id": call_id, "webhook_id": delivery.event_id}, status=201)


def _sip_headers(body: dict[str, Any]) -> list[dict[str, str]]:
    """The INVITE's headers as the webhook carries them: From, To, Call-ID, then any extra ones."""
    for name in ("from", "to"):
        if name in body and not isinstance(body[name], str):
            raise invalid_request(f"Invalid type for '{name}': expected a string.", param=name)
    caller = body.get("from", "+15550000000")
    callee = body.get("to", "+15550000001")
    headers = [
        {"name": "From", "value": f"<sip:{caller}@realtime.local>;tag={new_webhook_event_id()[4:14]}"},
        {"name": "To", "value": f"<sip:{callee}@realtime.local>"},
        {"name": "Call-ID", "value": f"{new_webhook_event_id()[4:]}@realtime.local"},
    ]
    extra = body.get("sip_headers", [])
    if not isinstance(extra, list) or len(extra) > _MAX_SIP_HEADERS:
        raise invalid_request(
            f"Invalid value for 'sip_headers': expected a list of at most {_MAX_SIP_HEADERS} objects.",
            param="sip_headers",
        )
    for index, header in enumerate(extra):
        if (
            not isinstance(header, dict)
            or set(header) != {"name", "value"}
            or not all(isinstance(v, str) for v in header.values())
        ):
            raise invalid_request(
                f'Invalid value for \'sip_headers[{index}]\': expected {{"name": str, "value": str}}.',
                param=f"sip_headers[{index}]",
            )
        headers.append({"name": header["name"], "value": header["value"]})
    return headers
