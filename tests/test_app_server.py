"""The app's HTTP API through FastAPI's test client, with exact stand-in models (tests/fakes.py):
every endpoint, the editing flow (click, box, undo, objects, propagate, correct, re-propagate,
export, download), and bad requests answered with a 4xx and a one-line message."""
from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the app needs samtrack[app]")
from fastapi.testclient import TestClient  # noqa: E402

from samtrack.api import VideoPredictor  # noqa: E402
from samtrack.app.server import create_app  # noqa: E402
from samtrack.config import load_config  # noqa: E402

from .fakes import COLOURS, BlobSegmenter, ColourTracker  # noqa: E402

H, W, N = 40, 60, 8


def square_clip(folder: Path, n: int = N) -> Path:
    """A red square moving right by 3 px a frame, a blue one still (PNG frames: exact colours)."""
    folder.mkdir()
    for t in range(n):
        frame = np.full((H, W, 3), 30, np.uint8)
        frame[10:22, 5 + 3 * t : 17 + 3 * t] = COLOURS[1]
        frame[28:36, 40:50] = COLOURS[2]
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return folder


def red_square(t: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[10:22, 5 + 3 * t : 17 + 3 * t] = True
    return mask


@pytest.fixture
def predictor() -> VideoPredictor:
    p = VideoPredictor(load_config("fast", ["sampling.n_positive=3"]), BlobSegmenter(), ColourTracker())
    p.keep_recent_embeddings(4)
    return p


@pytest.fixture
def app_env(tmp_path: Path, predictor: VideoPredictor):
    clip = square_clip(tmp_path / "clip")
    out = tmp_path / "out"
    app = create_app(predictor, out, [clip], log=lambda m: None)
    with TestClient(app) as client:
        sid = client.get("/api/sessions").json()["sessions"][0]["id"]
        yield client, sid, out, tmp_path


def wait_job(client: TestClient, sid: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/sessions/{sid}/job").json()["job"]
        if job["state"] != "running":
            return job
        time.sleep(0.02)
    raise AssertionError("job did not finish")


def labels(client: TestClient, sid: str, frame: int) -> np.ndarray:
    """Object ids from the mask overlay PNG (colour -> id by the DAVIS palette)."""
    from samtrack.palette import davis_palette

    response = client.get(f"/api/sessions/{sid}/masks/{frame}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))
    out = np.zeros(rgba.shape[:2], np.uint8)
    for obj_id in (1, 2, 3):
        hit = (rgba[..., 3] > 0) & np.all(rgba[..., :3] == davis_palette()[obj_id], axis=-1)
        out[hit] = obj_id
    return out


def test_page_and_static_files(app_env) -> None:
    client, *_ = app_env
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "matte-ffv1" in client.get("/api/formats").json()["formats"]


def test_edit_propagate_correct_export(app_env) -> None:
    client, sid, out, _ = app_env
    session = client.get(f"/api/sessions/{sid}").json()
    assert (session["width"], session["height"], session["n_frames"], session["frames"]) == (W, H, N, list(range(N)))
    frame = client.get(f"/api/sessions/{sid}/frames/3.jpg")
    assert frame.status_code == 200 and Image.open(io.BytesIO(frame.content)).size == (W, H)

    obj = client.post(f"/api/sessions/{sid}/objects", json={"name": "red"}).json()
    assert obj == {"id": 1, "name": "red"}
    # A click on the red square: its mask appears at once on that frame.
    r = client.post(f"/api/sessions/{sid}/clicks", json={"frame": 2, "obj_id": 1, "x": 14, "y": 15, "label": 1})
    assert r.status_code == 200, r.text
    assert np.array_equal(labels(client, sid, 2) == 1, red_square(2))
    info = client.get(f"/api/sessions/{sid}/frames/2/info").json()
    assert info["has_result"] and info["prompts"][0]["clicks"] == [[14.0, 15.0, 1]]
    # A negative click adds to the prompt; undo takes it back.
    client.post(f"/api/sessions/{sid}/clicks", json={"frame": 2, "obj_id": 1, "x": 2, "y": 2, "label": 0})
    assert len(client.get(f"/api/sessions/{sid}/frames/2/info").json()["prompts"][0]["clicks"]) == 2
    assert client.post(f"/api/sessions/{sid}/undo").status_code == 200
    assert len(client.get(f"/api/sessions/{sid}/frames/2/info").json()["prompts"][0]["clicks"]) == 1

    # A second object by box, renamed.
    client.post(f"/api/sessions/{sid}/objects", json={})
    r = client.post(f"/api/sessions/{sid}/box", json={"frame": 2, "obj_id": 2, "box": [50, 37, 38, 26]})
    assert r.status_code == 200, r.text
    blue = labels(client, sid, 2) == 2
    assert blue[28:36, 40:50].all() and blue.sum() == 80
    assert (labels(client, sid, 2) == 1).sum() == red_square(2).sum()  # the first object stays
    objects = client.patch(f"/api/sessions/{sid}/objects/2", json={"name": "  blue  box "}).json()["objects"]
    assert [o["name"] for o in objects] == ["red", "blue box"]

    # Propagate both ways from frame 2: every frame gets both squares.
    job = client.post(f"/api/sessions/{sid}/propagate", json={"frame": 2, "direction": "both"}).json()
    assert job["kind"] == "propagate" and job["total"] == 3 + 6
    job = wait_job(client, sid)
    assert job["state"] == "done" and job["done"] == job["total"], job
    for t in range(N):
        result = labels(client, sid, t)
        assert np.array_equal(result == 1, red_square(t)), t
        assert (result == 2).sum() == 80, t

    # A correction on a propagated frame starts from the points tracked there: a negative
    # click off the object keeps its mask; undo gives the frame back as propagation left it.
    propagated = labels(client, sid, 5)
    tracked = client.get(f"/api/sessions/{sid}/frames/5/info").json()["points"]["1"]
    r = client.post(f"/api/sessions/{sid}/clicks", json={"frame": 5, "obj_id": 1, "x": 2, "y": 38, "label": 0})
    assert r.status_code == 200, r.text
    clicks = client.get(f"/api/sessions/{sid}/frames/5/info").json()["prompts"][0]["clicks"]
    assert clicks[-1] == [2.0, 38.0, 0] and [c[:2] for c in clicks[:-1]] == [p[:2] for p in tracked if p[2] == 1 and p[3]]
    assert np.array_equal(labels(client, sid, 5) == 1, red_square(5))
    client.post(f"/api/sessions/{sid}/undo")
    assert client.get(f"/api/sessions/{sid}/frames/5/info").json()["prompts"] == []
    assert np.array_equal(labels(client, sid, 5), propagated)

    # Correct frame 6 (delete-and-redo style: a click for a third object), propagate forward from it.
    client.post(f"/api/sessions/{sid}/objects", json={"name": "background square"})
    r = client.post(f"/api/sessions/{sid}/clicks", json={"frame": 6, "obj_id": 3, "x": 45, "y": 30, "label": 1})
    assert r.status_code == 200
    assert (labels(client, sid, 6) == 3).sum() == 80 and not (labels(client, sid, 6) == 2).any()
    client.post(f"/api/sessions/{sid}/propagate", json={"frame": 6, "direction": "forward"})
    assert wait_job(client, sid)["state"] == "done"
    for t in (6, 7):
        result = labels(client, sid, t)
        assert (result == 3).sum() == 80 and np.array_equal(result == 1, red_square(t)), t
    assert (labels(client, sid, 5) == 2).sum() == 80  # frames behind the restart are kept

    # Delete the third object: its pixels go from every frame.
    client.delete(f"/api/sessions/{sid}/objects/3")
    assert not (labels(client, sid, 7) == 3).any()

    # Export mattes and COCO, then download the zip and one file.
    job = client.post(f"/api/sessions/{sid}/export", json={"formats": ["matte-png", "matte-ffv1", "overlay"], "feather": 0}).json()
    assert job["kind"] == "export" and job["total"] == N
    job = wait_job(client, sid)
    assert job["state"] == "done", job
    name = job["result"]
    assert client.get(f"/api/sessions/{sid}").json()["exports"] == [name]
    zipped = client.get(f"/api/sessions/{sid}/exports/{name}/download")
    assert zipped.status_code == 200
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        names = set(archive.namelist())
        assert {"matte/object_1.mkv", "matte/object_2.mkv", "matte/object_1/00007.png", "overlay.mp4"} <= names
        matte = np.asarray(Image.open(io.BytesIO(archive.read("matte/object_1/00007.png"))))
    assert np.array_equal(matte == 255, red_square(7))
    one = client.get(f"/api/sessions/{sid}/exports/{name}/files/matte/object_1/00003.png")
    assert one.status_code == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(one.content))) == 255, red_square(3))
    # Everything the app wrote is under the output folder.
    assert (out / f"{name}.zip").is_file() and (out / name / "matte").is_dir()


def test_cancel_propagation(app_env, monkeypatch) -> None:
    client, sid, *_ = app_env
    import samtrack.app.session as session_module

    client.post(f"/api/sessions/{sid}/objects", json={})
    client.post(f"/api/sessions/{sid}/clicks", json={"frame": 0, "obj_id": 1, "x": 10, "y": 15, "label": 1})
    real = session_module.write_label_png

    def slow(*args, **kwargs):  # each frame takes a while, so that the cancel lands mid-pass
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module, "write_label_png", slow)
    client.post(f"/api/sessions/{sid}/propagate", json={"frame": 0, "direction": "forward"})
    # Busy while it runs: edits are refused with 409 and a message.
    busy = client.post(f"/api/sessions/{sid}/clicks", json={"frame": 0, "obj_id": 1, "x": 10, "y": 15, "label": 1})
    assert busy.status_code == 409 and "propagate is running" in busy.json()["error"]
    assert client.post(f"/api/sessions/{sid}/cancel").status_code == 200
    job = wait_job(client, sid)
    assert job["state"] == "cancelled" and job["done"] < job["total"]
    assert client.post(f"/api/sessions/{sid}/cancel").status_code == 400  # nothing running now


@pytest.mark.parametrize("method, path, body, status, message", [
    ("get", "/api/sessions/nope", None, 404, "no session 'nope'"),
    ("get", "/api/sessions/{sid}/frames/99.jpg", None, 400, "frame 99 is out of range"),
    ("get", "/api/sessions/{sid}/frames/-1.jpg", None, 400, "frame -1 is out of range"),
    ("get", "/api/sessions/{sid}/masks/8.png", None, 400, "frame 8 is out of range"),
    ("get", "/api/sessions/{sid}/frames/x.jpg", None, 422, "bad request"),
    ("post", "/api/sessions/{sid}/clicks", {"frame": 0, "obj_id": 1, "x": 60, "y": 5}, 400, "outside the 60x40 frame"),
    ("post", "/api/sessions/{sid}/clicks", {"frame": 0, "obj_id": 1, "x": -1, "y": 5}, 400, "outside the 60x40 frame"),
    ("post", "/api/sessions/{sid}/clicks", {"frame": 50, "obj_id": 1, "x": 5, "y": 5}, 400, "frame 50 is out of range"),
    ("post", "/api/sessions/{sid}/clicks", {"frame": 0, "obj_id": 9, "x": 5, "y": 5}, 400, "no object 9"),
    ("post", "/api/sessions/{sid}/clicks", {"frame": 0, "obj_id": 1, "x": 5, "y": 5, "label": 3}, 400, "label must be"),
    ("post", "/api/sessions/{sid}/clicks", {"frame": 0, "obj_id": 1, "x": 5, "y": 5, "label": 0}, 400, "a negative click needs"),
    ("post", "/api/sessions/{sid}/clicks", {"frame": 0, "obj_id": 1, "x": "a", "y": 5}, 422, "bad request: x"),
    ("post", "/api/sessions/{sid}/clicks", {"frame": 0, "obj": 1, "x": 5, "y": 5}, 422, "bad request"),
    ("post", "/api/sessions/{sid}/box", {"frame": 0, "obj_id": 1, "box": [1, 2, 3]}, 400, "a box is"),
    ("post", "/api/sessions/{sid}/box", {"frame": 0, "obj_id": 1, "box": [1, 2, 90, 9]}, 400, "outside"),
    ("post", "/api/sessions/{sid}/undo", None, 400, "nothing to undo"),
    ("post", "/api/sessions/{sid}/propagate", {"frame": 0}, 400, "nothing to propagate"),
    ("post", "/api/sessions/{sid}/propagate", {"frame": 0, "direction": "up"}, 400, "direction must be"),
    ("post", "/api/sessions/{sid}/export", {"formats": ["gif"]}, 400, "unknown export format 'gif'"),
    ("post", "/api/sessions/{sid}/export", {"formats": ["matte-png"]}, 400, "nothing to export"),
    ("patch", "/api/sessions/{sid}/objects/5", {"name": "x"}, 400, "no object 5"),
    ("delete", "/api/sessions/{sid}/objects/5", None, 400, "no object 5"),
    ("get", "/api/sessions/{sid}/exports/..%2F..%2Fetc/download", None, 404, "not found"),
    ("get", "/api/sessions/{sid}/exports/nothing/download", None, 404, "no export named 'nothing'"),
    ("get", "/api/sessions/{sid}/exports/x/files/../../../etc/passwd", None, 404, None),
])
def test_bad_requests_are_4xx_with_a_message(app_env, method, path, body, status, message) -> None:
    client, sid, *_ = app_env
    client.post(f"/api/sessions/{sid}/objects", json={})
    kwargs = {} if body is None else {"json": body}
    response = getattr(client, method)(path.format(sid=sid), **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert "\n" not in error and "Traceback" not in error
    if message:
        assert message in error


def test_malformed_json_and_traversal_inside_an_export(app_env) -> None:
    client, sid, out, tmp_path = app_env
    r = client.post(f"/api/sessions/{sid}/clicks", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "bad request" in r.json()["error"]
    # A real export, then attempts to read outside its folder through the file route.
    (tmp_path / "secret.txt").write_text("secret")
    client.post(f"/api/sessions/{sid}/objects", json={})
    client.post(f"/api/sessions/{sid}/clicks", json={"frame": 0, "obj_id": 1, "x": 10, "y": 15, "label": 1})
    client.post(f"/api/sessions/{sid}/export", json={"formats": ["matte-png"]})
    name = wait_job(client, sid)["result"]
    assert client.get(f"/api/sessions/{sid}/exports/{name}/files/matte/object_1/00000.png").status_code == 200
    for inner in ("../../secret.txt", "..%2F..%2Fsecret.txt", "%2E%2E/%2E%2E/secret.txt", "/etc/passwd",
                  "matte/../../" + name + ".zip"):
        r = client.get(f"/api/sessions/{sid}/exports/{name}/files/{inner}")
        assert r.status_code == 404, (inner, r.status_code)
        assert "secret" != r.text


def test_token_required_when_set(tmp_path: Path, predictor) -> None:
    clip = square_clip(tmp_path / "clip")
    app = create_app(predictor, tmp_path / "out", [clip], token="s3cret", log=lambda m: None)
    with TestClient(app) as client:
        for path in ("/", "/api/sessions", "/static/app.js"):
            r = client.get(path)
            assert r.status_code == 401 and "token" in r.json()["error"]
        assert client.get("/api/sessions", headers={"X-Samtrack-Token": "wrong"}).status_code == 401
        assert client.get("/api/sessions", headers={"X-Samtrack-Token": "s3cret"}).status_code == 200
        assert client.get("/?token=s3cret").status_code == 200


def test_upload_limit_and_bad_upload(tmp_path: Path, predictor) -> None:
    app = create_app(predictor, tmp_path / "out", [], max_upload_mb=0.001, log=lambda m: None)
    with TestClient(app) as client:
        assert client.get("/api/sessions").json()["sessions"] == []
        big = client.post("/api/sessions/upload", files={"file": ("a.mp4", b"0" * 5000, "video/mp4")})
        assert big.status_code == 413 and "limit" in big.json()["error"]
        text = client.post("/api/sessions/upload", files={"file": ("notes.txt", b"hi", "text/plain")})
        assert text.status_code == 400 and "not a video file" in text.json()["error"]
        corrupt = client.post("/api/sessions/upload", files={"file": ("../../evil.mp4", b"not a video", "video/mp4")})
        assert corrupt.status_code == 400 and "cannot be opened as a video" in corrupt.json()["error"]
        assert not any((tmp_path / "out" / "uploads").iterdir())  # the bad upload is not kept
        assert not (tmp_path / "evil.mp4").exists()


def test_upload_a_video(tmp_path: Path, predictor) -> None:
    import av

    path = tmp_path / "tiny.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * t, np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    app = create_app(predictor, tmp_path / "out", [], log=lambda m: None)
    with TestClient(app) as client:
        r = client.post("/api/sessions/upload", files={"file": ("my clip.mp4", path.read_bytes(), "video/mp4")})
        assert r.status_code == 200, r.text
        session = r.json()
        assert (session["width"], session["height"], session["n_frames"]) == (64, 48, 5)
        assert session["video"].endswith("my_clip.mp4")
        assert client.get(f"/api/sessions/{session['id']}/frames/4.jpg").status_code == 200
        assert client.delete(f"/api/sessions/{session['id']}").status_code == 200
        assert client.get(f"/api/sessions/{session['id']}").status_code == 404


def test_cli_refuses_remote_host_without_flag(tmp_path: Path, capsys) -> None:
    from samtrack.cli import main

    clip = square_clip(tmp_path / "clip")
    assert main(["app", str(clip), "--host", "0.0.0.0", "--no-browser", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-remote" in err
    assert main(["app", str(tmp_path / "missing.mp4"), "--no-browser", "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_access_token_and_serve_prints_url(tmp_path: Path, predictor, monkeypatch) -> None:
    import uvicorn

    from samtrack.app.server import access_token, serve
    from samtrack.errors import SamtrackError

    assert access_token("127.0.0.1", False) is None and access_token("localhost", True) is None
    with pytest.raises(SamtrackError, match="--allow-remote"):
        access_token("192.168.1.5", False)
    token = access_token("192.168.1.5", True)
    assert len(token) >= 20 and token != access_token("192.168.1.5", True)

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(sockets[0].getsockname()))
    lines: list[str] = []
    clip = square_clip(tmp_path / "clip")
    serve(lambda: predictor, [clip], tmp_path / "out", port=0, open_browser=False, log=lines.append)
    host, port = served[0]
    assert host == "127.0.0.1" and port > 0
    assert any(f"http://127.0.0.1:{port}/" in line for line in lines) and not any("?token=" in line or "access token" in line for line in lines)
