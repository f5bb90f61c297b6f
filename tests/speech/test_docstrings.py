"""The examples in the speech modules' docstrings are true."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from realtime_local.speech import responder, semantic, stt, tts


@pytest.mark.parametrize("module", [responder, semantic, stt, tts], ids=lambda module: module.__name__)
def test_docstring_examples_hold(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
