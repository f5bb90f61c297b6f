"""The browser-direct route answers CORS: a console on another origin posts its offer with an `ek_` key."""

from __future__ import annotations

from tests.engine.conftest import RunningEngine, assert_error_shape


async def test_preflight_for_call_creation_allows_bearer_and_sdp_from_any_origin(
    engine: RunningEngine,
) -> None:
    response = await engine.http.options(
        f"{engine.base_url}/realtime/calls",
        headers={
            "Origin": "http://127.0.0.1:8000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


async def test_call_creation_responses_expose_location_even_on_errors(engine: RunningEngine) -> None:
    response = await engine.http.post(
        f"{engine.base_url}/realtime/calls",
        content=b"v=0\r\n",
        headers={"Origin": "http://127.0.0.1:8000", "Content-Type": "application/sdp"},
    )
    assert response.status_code == 401
    assert_error_shape(response.json())
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-expose-headers"] == "Location"


async def test_other_routes_do_not_answer_cross_origin_requests(engine: RunningEngine) -> None:
    response = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets", json={}, headers={"Origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in response.headers
