"""samtrack without PyTorch: the default segmenter works, a PyTorch one says which extra to add."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs the CLI with `import torch` failing, as on an install without the torch extra.
_NO_TORCH = "import sys; sys.modules['torch'] = None; from samtrack.cli import main; sys.exit(main(sys.argv[1:]))"


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "SAMTRACK_HOME": str(tmp_path / "cache")})


def test_torch_segmenter_without_torch_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(["run", str(REPO / "examples" / "bear.mp4"), "--points", str(REPO / "examples" / "clicks.json"),
                 "--out", str(out), "--segmenter", "mobilesam", "--quiet"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "pip install 'samtrack[torch]'" in lines[0], proc.stderr
    assert not out.exists()


def test_default_commands_do_not_import_torch(tmp_path: Path) -> None:
    proc = _run(["config"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "name: mobilesam-onnx" in proc.stdout
    proc = _run(["weights", "list"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mobilesam-torch" in proc.stdout


def test_onnx_segmenter_refuses_pytorch_options(tmp_path: Path, monkeypatch) -> None:
    from samtrack.config import load_config
    from samtrack.errors import ConfigError
    from samtrack.segmenters import build_segmenter

    import pytest

    with pytest.raises(ConfigError, match="applies to the PyTorch segmenters"):
        build_segmenter(load_config("samtrack", ["segmenter.device=cuda"]).segmenter)
    # Unpadded ONNX graphs are exported with PyTorch: without it, said before any weights load.
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ConfigError, match=r"unpadded frames with mobilesam-onnx .* pip install 'samtrack\[torch\]'"):
        build_segmenter(load_config("samtrack", ["segmenter.unpadded=true"]).segmenter)


def test_segmenter_config_errors_come_before_the_run() -> None:
    from samtrack.config import load_config
    from samtrack.errors import ConfigError

    import pytest

    with pytest.raises(ConfigError, match="segmenter.max_batch must be >= 1"):
        load_config("samtrack", ["segmenter.name=mobilesam", "segmenter.max_batch=0"])
    assert load_config("samtrack", ["segmenter.name=mobilesam", "decode.multimask=consistent"]).decode.multimask == "consistent"


def test_learned_tracker_without_torch_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(["run", str(REPO / "examples" / "bear.mp4"), "--points", str(REPO / "examples" / "clicks.json"),
                 "--out", str(out), "--tracker", "cotracker3", "--segmenter", "mobilesam-onnx", "--quiet"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "cotracker3 trackers need PyTorch" in lines[0], proc.stderr
    assert not out.exists()


def test_default_preset_choice_imports_torch_only_where_a_gpu_could_be(tmp_path: Path) -> None:
    """The default preset depends on whether PyTorch sees CUDA; without an NVIDIA driver that is
    known without importing torch (190 MB resident for the rest of the run)."""
    from samtrack.torch_models import nvidia_driver_present, torch_installed

    if not torch_installed():
        pytest.skip("needs the torch extra installed, to show it stays unimported")
    code = ("import sys; from samtrack.config import default_preset; "
            "print(default_preset()[0], 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    preset, imported = proc.stdout.split()
    assert imported == str(nvidia_driver_present())
    if imported == "False":
        assert preset == "samtrack"
