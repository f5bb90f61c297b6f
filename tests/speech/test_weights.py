"""Model files are found inside their packages without importing them, and checked by hash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from realtime_local.speech import weights
from realtime_local.speech.weights import ModelIntegrityError


def _flip_a_byte(path: Path, offset: int = 1000) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_installed_model_files_match_their_pinned_hashes() -> None:
    assert weights.silero_vad_path().name == "silero_vad.onnx"
    model, config = weights.piper_voice_paths()
    assert model.name == "en_US-joe-medium.onnx" and config.name == "en_US-joe-medium.onnx.json"


def test_locating_silero_does_not_import_its_package() -> None:
    # Importing silero_vad would import torch, which the engine does not install.
    code = (
        "import sys; from realtime_local.speech import weights; weights.silero_vad_path(); "
        "assert 'silero_vad' not in sys.modules, 'silero_vad was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_corrupted_file_fails_with_the_file_the_hashes_and_the_fix(tmp_path: Path) -> None:
    copy = tmp_path / "silero_vad.onnx"
    shutil.copyfile(weights.silero_vad_path(), copy)
    _flip_a_byte(copy)

    with pytest.raises(ModelIntegrityError) as caught:
        weights.verify(copy, weights.SILERO_VAD_ONNX.sha256, package=weights.SILERO_VAD_ONNX.package)

    message = str(caught.value)
    assert str(copy) in message
    assert weights.SILERO_VAD_ONNX.sha256 in message
    assert caught.value.actual == weights.sha256_file(copy) and caught.value.actual in message
    assert "reinstall" in message and "silero-vad==6.2.3" in message


def test_a_missing_file_is_reported_as_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelIntegrityError, match="<missing>"):
        weights.verify(tmp_path / "absent.onnx", "0" * 64, package="x==1")


def test_whisper_halves_are_joined_once_into_a_verified_model(tmp_path: Path) -> None:
    model_dir = weights.whisper_model_dir(tmp_path)

    model_bin = model_dir / "model.bin"
    assert weights.sha256_file(model_bin) == weights.WHISPER_MODEL_BIN_SHA256
    assert {path.name for path in model_dir.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }, "no temporary files may be left behind"
    joined_at = model_bin.stat().st_mtime_ns
    assert weights.whisper_model_dir(tmp_path) == model_dir
    assert model_bin.stat().st_mtime_ns == joined_at, "an intact joined model is not rebuilt"


def test_a_corrupted_joined_whisper_model_is_rebuilt_from_the_verified_halves(tmp_path: Path) -> None:
    model_bin = weights.whisper_model_dir(tmp_path) / "model.bin"
    _flip_a_byte(model_bin, offset=50_000_000)

    weights.whisper_model_dir(tmp_path)

    assert weights.sha256_file(model_bin) == weights.WHISPER_MODEL_BIN_SHA256
