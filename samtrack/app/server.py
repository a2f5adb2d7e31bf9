"""The local web app's HTTP server (FastAPI): a JSON API over :class:`EditSession` and the page.

Safety, by construction: the server binds 127.0.0.1 unless told otherwise (see :func:`serve`);
with a token, every request must carry it (``X-Samtrack-Token`` header or ``token`` query);
it reads only the videos opened on the command line or uploaded (by session id, never by a path
from a request), writes only under the output folder (uploads, the work folder, exports), and
serves exported files only from inside an export's own folder. Every error reaches the page as
``{"error": "one line"}`` with a 4xx status (5xx only for bugs, whose traceback goes to the
terminal, never to the page).
"""
from __future__ import annotations

import re
import secrets
import shutil
import threading
import traceback
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable, Sequence

from fastapi import FastAPI, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..api import VideoPredictor
from ..errors import InputError, SamtrackError
from ..export import EXPORT_FORMATS
from .session import Busy, EditSession

STATIC = Path(__file__).parent / "static"
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v")
TOKEN_HEADER = "x-samtrack-token"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored


class ClickIn(_Body):
    frame: int
    obj_id: int
    x: float
    y: float
    label: int = Field(1, description="1 positive, 0 negative")


class BoxIn(_Body):
    frame: int
    obj_id: int
    box: list[float]


class ObjectIn(_Body):
    name: str | None = None


class PropagateIn(_Body):
    frame: int
    direction: str = "both"


class ExportIn(_Body):
    formats: list[str]
    feather: float = 0.0


def create_app(
    predictor: VideoPredictor,
    out_dir: str | Path,
    videos: Sequence[str | Path] = (),
    token: str | None = None,
    max_upload_mb: float = 1024,
    log: Callable[[str], None] = print,
) -> FastAPI:
    """The app: ``videos`` are opened as sessions at start; exports and uploads go under
    ``out_dir``; ``token`` (None: no token) is required on every request."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sessions: dict[str, EditSession] = {}
    model_lock = threading.Lock()
    max_upload = int(max_upload_mb * 1e6)

    def open_session(path: Path) -> EditSession:
        session_id = secrets.token_hex(4)
        session = EditSession(session_id, predictor, path, out, model_lock, log=log)
        sessions[session_id] = session
        return session

    for video in videos:
        open_session(Path(video))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        for session in list(sessions.values()):
            session.close()

    app = FastAPI(title="samtrack", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sessions = sessions

    # ------------------------------------------------------------------ safety and errors
    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if token is not None:
            given = request.headers.get(TOKEN_HEADER) or request.query_params.get("token") or ""
            if not secrets.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"error": "missing or wrong access token (open the URL the server printed)"}, 401)
        return await call_next(request)

    @app.exception_handler(SamtrackError)
    async def samtrack_error(_: Request, exc: SamtrackError):
        return JSONResponse({"error": str(exc)}, 409 if isinstance(exc, Busy) else 400)

    @app.exception_handler(FileNotFoundError)
    async def not_found(_: Request, exc: FileNotFoundError):
        return JSONResponse({"error": str(exc)}, 404)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":  # no route matched
            detail = f"not found: {request.url.path}"
        return JSONResponse({"error": detail}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"bad request: {where + ': ' if where else ''}{first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception):
        log(f"samtrack app: internal error:\n{''.join(traceback.format_exception(exc))}")
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); details are in the terminal"}, 500)

    def get(session_id: str) -> EditSession:
        session = sessions.get(session_id)
        if session is None:
            raise HTTPException(404, f"no session {session_id!r} (reload the page)")
        return session

    # ------------------------------------------------------------------ the page
    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------------ sessions
    @app.get("/api/formats")
    def formats() -> dict:
        return {"formats": EXPORT_FORMATS}

    @app.get("/api/sessions")
    def list_sessions() -> dict:
        return {"sessions": [s.describe() for s in sessions.values()]}

    @app.post("/api/sessions/upload")
    async def upload(request: Request, file: UploadFile) -> dict:
        length = request.headers.get("content-length")
        if length is None:
            raise HTTPException(411, "uploads need a Content-Length")
        if int(length) > max_upload:
            raise HTTPException(413, f"the upload is larger than the limit of {max_upload / 1e6:.0f} MB (--max-upload-mb)")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(file.filename or "").name).lstrip(".")
        if not name.lower().endswith(VIDEO_SUFFIXES):
            raise InputError(f"{file.filename!r} is not a video file ({', '.join(VIDEO_SUFFIXES)})")
        folder = out / "uploads"
        folder.mkdir(exist_ok=True)
        target = folder / f"{secrets.token_hex(3)}-{name}"
        with target.open("xb") as f:
            shutil.copyfileobj(file.file, f)
        try:
            session = open_session(target)
        except SamtrackError:
            target.unlink(missing_ok=True)
            raise
        return session.describe()

    @app.get("/api/sessions/{session_id}")
    def describe(session_id: str) -> dict:
        return get(session_id).describe()

    @app.delete("/api/sessions/{session_id}")
    def close(session_id: str) -> dict:
        get(session_id).close()
        del sessions[session_id]
        return {"closed": session_id}

    @app.get("/api/sessions/{session_id}/frames/{frame}.jpg")
    def frame_jpeg(session_id: str, frame: int) -> Response:
        return Response(get(session_id).frame_jpeg(frame), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/sessions/{session_id}/masks/{frame}.png")
    def mask_png(session_id: str, frame: int) -> Response:
        return Response(get(session_id).mask_png(frame), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/api/sessions/{session_id}/frames/{frame}/info")
    def frame_info(session_id: str, frame: int) -> dict:
        return get(session_id).frame_info(frame)

    # ------------------------------------------------------------------ objects and prompts
    @app.post("/api/sessions/{session_id}/objects")
    def add_object(session_id: str, body: ObjectIn) -> dict:
        return get(session_id).add_object(body.name)

    @app.patch("/api/sessions/{session_id}/objects/{obj_id}")
    def rename_object(session_id: str, obj_id: int, body: ObjectIn) -> dict:
        session = get(session_id)
        session.rename_object(obj_id, body.name or "")
        return {"objects": session.objects()}

    @app.delete("/api/sessions/{session_id}/objects/{obj_id}")
    def delete_object(session_id: str, obj_id: int) -> dict:
        session = get(session_id)
        session.delete_object(obj_id)
        return {"objects": session.objects()}

    @app.post("/api/sessions/{session_id}/clicks")
    def click(session_id: str, body: ClickIn) -> dict:
        return get(session_id).add_click(body.frame, body.obj_id, body.x, body.y, body.label)

    @app.post("/api/sessions/{session_id}/box")
    def box(session_id: str, body: BoxIn) -> dict:
        return get(session_id).set_box(body.frame, body.obj_id, body.box)

    @app.post("/api/sessions/{session_id}/undo")
    def undo(session_id: str) -> dict:
        return get(session_id).undo()

    # ------------------------------------------------------------------ jobs
    @app.post("/api/sessions/{session_id}/propagate")
    def propagate(session_id: str, body: PropagateIn) -> dict:
        return get(session_id).start_propagation(body.frame, body.direction).to_dict()

    @app.post("/api/sessions/{session_id}/export")
    def export(session_id: str, body: ExportIn) -> dict:
        return get(session_id).start_export(body.formats, body.feather).to_dict()

    @app.get("/api/sessions/{session_id}/job")
    def job(session_id: str) -> dict:
        session = get(session_id)
        return {"job": session.job.to_dict() if session.job else None, "revision": session.revision}

    @app.post("/api/sessions/{session_id}/cancel")
    def cancel(session_id: str) -> dict:
        return get(session_id).cancel().to_dict()

    @app.get("/api/sessions/{session_id}/exports/{name}/download")
    def download(session_id: str, name: str) -> FileResponse:
        path = get(session_id).export_path(name)
        return FileResponse(path, media_type="application/zip", filename=path.name)

    @app.get("/api/sessions/{session_id}/exports/{name}/files/{inner:path}")
    def export_file(session_id: str, name: str, inner: str) -> FileResponse:
        return FileResponse(get(session_id).export_path(name, inner))

    return app


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def access_token(host: str, allow_remote: bool) -> str | None:
    """None for a loopback host; else, with ``allow_remote``, a new random token (refused
    without it)."""
    if host in LOCAL_HOSTS:
        return None
    if not allow_remote:
        raise SamtrackError(f"--host {host} lets other machines reach the app; pass --allow-remote as well "
                            "(a token is then required on every request)")
    return secrets.token_urlsafe(16)


def serve(
    predictor_factory: Callable[[], VideoPredictor],
    videos: Sequence[str | Path],
    out_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_remote: bool = False,
    open_browser: bool = True,
    max_upload_mb: float = 1024,
    log: Callable[[str], None] = print,
) -> None:
    """Check the arguments, load the model, and serve until Ctrl-C.

    A host other than the loopback needs ``allow_remote``: the app then asks for a token,
    printed with the URL, on every request.
    """
    import socket
    import webbrowser

    import uvicorn

    from ..video import open_video

    token = access_token(host, allow_remote)
    for video in videos:
        open_video(video).close()  # a bad file fails now, in one line, before the model loads
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise SamtrackError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    port = sock.getsockname()[1]
    predictor = predictor_factory()
    predictor.keep_recent_embeddings(4)
    app = create_app(predictor, out_dir, videos, token=token, max_upload_mb=max_upload_mb, log=log)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/" + (f"?token={token}" if token else "")
    if token:
        log(f"samtrack app: WARNING: listening on {host}:{port}, reachable from other machines; "
            f"anyone with this token can read the opened videos and write under {Path(out_dir).resolve()}")
        log(f"samtrack app: access token {token}")
    log(f"samtrack app: {url}  (exports go to {Path(out_dir).resolve()}; Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    server.run(sockets=[sock])


class BackgroundServer:
    """Serves an app on a free loopback port from a background thread, for tests and
    benchmarks: ``with BackgroundServer(app) as url: ...``; the server stops on exit."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1") -> None:
        import socket

        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self.url = f"http://{host}:{self._sock.getsockname()[1]}/"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> str:
        import time

        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the app server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
