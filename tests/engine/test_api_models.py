"""`GET /v1/models`: the cheap authenticated request a deployment check makes, as against OpenAI."""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI

from tests.engine.conftest import RunningEngine, assert_error_shape


async def test_the_official_sdk_lists_the_engine_models_with_the_api_key(engine: RunningEngine) -> None:
    async with AsyncOpenAI(
        base_url=engine.base_url, api_key=engine.config.api_key, max_retries=0, timeout=10.0
    ) as sdk:
        models = [model async for model in sdk.models.list()]
    assert "gpt-realtime" in {model.id for model in models}
    assert {model.object for model in models} == {"model"}


async def test_a_wrong_key_is_refused_with_401_like_openai(engine: RunningEngine) -> None:
    async with AsyncOpenAI(base_url=engine.base_url, api_key="sk-wrong", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            await sdk.models.list()
    response = await engine.http.get(f"{engine.base_url}/models", headers={"Authorization": "Bearer sk-x"})
    assert response.status_code == 401
    assert assert_error_shape(response.json())["code"] == "invalid_api_key"
