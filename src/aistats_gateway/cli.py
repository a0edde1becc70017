"""The ``aistats-gateway`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from aistats_gateway.settings import ConfigError, Settings, load_settings

app = typer.Typer(help="aistats-gateway: a self-hostable AI Stats Gateway.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
catalogue_app = typer.Typer(help="Validate and sync the model catalogue.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(catalogue_app, name="catalogue")
credits_app = typer.Typer(help="Add and show workspace credits.", no_args_is_help=True)
app.add_typer(credits_app, name="credits")

out = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory [env AISTATS_DATA_DIR]")]
DatabaseURL = Annotated[str | None, typer.Option("--database-url", help="[env AISTATS_DATABASE_URL]")]


def _settings(*, follow_serve: bool = True, **overrides: Any) -> Settings:
    """Settings from flags and the environment; with neither a data directory nor a database given,
    those ``serve --remember`` recorded (``serverinfo``), unless ``follow_serve`` is off."""
    if follow_serve:
        overrides = _follow_serve(overrides)
    try:
        s = load_settings(**overrides)
        s.ensure_data_dir()
        return s
    except ConfigError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


def _follow_serve(overrides: dict[str, Any]) -> dict[str, Any]:
    from aistats_gateway import serverinfo

    if overrides.get("data_dir") is not None or overrides.get("database_url") is not None \
            or os.environ.get("AISTATS_DATA_DIR") or os.environ.get("AISTATS_DATABASE_URL"):
        return overrides
    rec = serverinfo.recall()
    if rec is None:
        return overrides
    if rec.masked_database_url:
        sys.stderr.write(f"error: the server recorded in {rec.path} uses {rec.masked_database_url}; set "
                         "AISTATS_DATABASE_URL (and AISTATS_DATA_DIR) to the values it was started with\n")
        raise typer.Exit(2)
    if rec.data_dir != Path("./data").resolve() or rec.database_url:
        sys.stderr.write(f"using the server's data directory {rec.data_dir}"
                         + (f" and database {_safe_url(rec.database_url)}" if rec.database_url else "")
                         + f" (recorded by ./start.sh in {rec.path}); pass --data-dir to use another\n")
    return {**overrides, "data_dir": rec.data_dir, "database_url": rec.database_url}


def _command_path() -> str:
    """How to run this CLI again: the installed script when there is one."""
    script = Path(sys.prefix) / "bin" / "aistats-gateway"
    return str(script) if script.exists() else f"{sys.executable} -m aistats_gateway.cli"


def _migrate(settings: Settings) -> None:
    from aistats_gateway.migrate import upgrade

    try:
        upgrade(settings.db_url)
    except Exception as e:
        err.print(f"[red]error:[/red] cannot migrate the database at {_safe_url(settings.db_url)}: {e}")
        raise typer.Exit(1) from None


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def _run(coro_fn: Any, settings: Settings) -> Any:
    from aistats_gateway.db.engine import create_engine, session_factory

    async def main() -> Any:
        engine = create_engine(settings.db_url, pool_size=2)
        try:
            return await coro_fn(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())


#: Balances and limits are BIGINT nano-USD: nothing may exceed what the column holds.
MAX_NANOS = 2**63 - 1
MAX_USD = Decimal(MAX_NANOS) / 1_000_000_000
_NO_LIMIT = ("none", "unlimited", "off")


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _usd_to_nanos(value: str, flag: str = "--credits") -> int:
    """A non-negative USD amount as nano-USD; a clear message (naming ``flag``) for anything else."""
    try:
        d = Decimal(value.strip())
    except InvalidOperation:
        _fail(f"{flag} {value!r} is not an amount in USD (e.g. 10 or 2.50)")
    if not d.is_finite():
        _fail(f"{flag} {value!r} is not a finite amount in USD (e.g. 10 or 2.50)")
    if d < 0:
        _fail(f"{flag} must be a non-negative amount, got {value!r}")
    if d > MAX_USD:
        _fail(f"{flag} {value!r} is too large; at most {MAX_USD:.9f} USD")
    if d != d.quantize(Decimal("0.000000001")):
        _fail(f"{flag} {value!r} has more than 9 decimal places (the smallest unit is 1 nano-USD)")
    return int(d * 1_000_000_000)


def _limit_nanos(value: str, flag: str) -> int | None:
    """A spend limit: ``none`` removes it; 0 is refused (it would block every request)."""
    if value.strip().lower() in _NO_LIMIT:
        return None
    nanos = _usd_to_nanos(value, flag)
    if nanos == 0:
        _fail(f"{flag} 0 would block all spending; pass {flag} none to remove the limit, or revoke the key")
    return nanos


def _per_minute(value: str, flag: str, what: str) -> int | None:
    if value.strip().lower() in _NO_LIMIT:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        _fail(f"{flag} {value!r} is not a whole number of {what} per minute (or 'none')")
    if n < 1:
        _fail(f"{flag} must be at least 1 (0 would block every request); pass {flag} none to remove the limit")
    if n > 2**31 - 1:
        _fail(f"{flag} {value!r} is too large; at most {2**31 - 1}")
    return n


def _rpm(value: str) -> int | None:
    return _per_minute(value, "--rpm", "requests")


# ---- serve ----------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env AISTATS_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env AISTATS_PORT, default 8080]")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseURL = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes")] = 1,
    bootstrap_key: Annotated[bool, typer.Option(
        "--bootstrap-key", help="Create and print a first API key when none exists")] = False,
    remember: Annotated[bool, typer.Option(
        "--remember", help="Record the data directory and database for later keys/credits commands "
        "(./start.sh does)")] = False,
) -> None:
    """Migrate the database, then serve the API."""
    settings = _settings(host=host, port=port, data_dir=data_dir, database_url=database_url, follow_serve=False)
    from aistats_gateway import logs

    logs.configure(settings.log_level, settings.log_format)
    _migrate(settings)
    if bootstrap_key:
        _bootstrap(settings)
    # Worker processes (and reloads) read their configuration from the environment.
    os.environ["AISTATS_DATA_DIR"] = str(settings.data_dir.resolve())
    os.environ["AISTATS_DATABASE_URL"] = settings.db_url
    os.environ["AISTATS_HOST"] = settings.host
    os.environ["AISTATS_PORT"] = str(settings.port)
    _ = settings.pepper, settings.signing_key  # generate secrets once, before workers start

    import uvicorn

    from aistats_gateway.http.server import CoalescingHttpToolsProtocol

    if remember:
        from aistats_gateway import serverinfo

        recorded = serverinfo.remember(settings.data_dir, settings.database_url, _safe_url(settings.db_url))
        sys.stderr.write(f"CLI: {_command_path()} (keys, credits …; it uses this server's data directory "
                         f"{settings.data_dir.resolve()})\n" if recorded else
                         f"note: could not record the data directory in {serverinfo.record_path()}; pass "
                         f"--data-dir {settings.data_dir.resolve()} to keys/credits commands\n")
    # soft_wrap: never break the line, whatever the width (a pipe or a log file has none).
    err.print(f"[green]aistats-gateway[/green] listening on http://{settings.host}:{settings.port} "
              f"(database: {_safe_url(settings.db_url)})", soft_wrap=True)
    uvicorn.run(
        "aistats_gateway.app:create_app_from_env", factory=True, host=settings.host, port=settings.port,
        workers=workers, loop="uvloop", http=CoalescingHttpToolsProtocol, log_config=None, access_log=False,
        proxy_headers=True, server_header=False,
        # Longer than clients keep idle connections pooled (httpx and the openai SDK: 5 s, uvicorn's own
        # default too), so a reused connection is never closed under a request in flight.
        timeout_keep_alive=75,
    )


def _bootstrap(settings: Settings) -> None:
    from aistats_gateway.auth import service
    from aistats_gateway.billing import accounts

    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            if await service.count_active(s) > 0:
                return None
            return await accounts.create_key(s, settings.pepper, "first key", credits_nanos=10_000_000_000)

    created = _run(work, settings)
    if created is None:
        return
    base = f"http://{settings.host}:{settings.port}"
    # Plain writes, not Rich: a wrapped line would break the key and the commands when copied.
    sys.stderr.write(
        "\nCreated your first API key (shown once; keep it). Its workspace has $10 of credits.\n"
        f"  {created.key}\n"
        "Try it:\n"
        f'  curl "{base}/v1/models?limit=3" -H "Authorization: Bearer {created.key}"\n'
        f'  curl "{base}/v1/videos/models?params=size,duration_seconds" -H "Authorization: Bearer {created.key}"\n'
        f'  curl "{base}/v1/batches/models?params=request_endpoint,window" -H "Authorization: Bearer {created.key}"\n'
        f'  curl {base}/v1/videos -H "Authorization: Bearer {created.key}" -H "Content-Type: application/json" '
        """-d '{"model": "local/procedural-video", "prompt": "a paper boat", "duration": 4}'\n\n"""
    )


@app.command()
def worker(
    data_dir: DataDir = None,
    database_url: DatabaseURL = None,
    concurrency: Annotated[int | None, typer.Option(help="Jobs at once [env AISTATS_JOB_CONCURRENCY]")] = None,
) -> None:
    """Run background jobs (video polling, downloads …) without serving HTTP. PostgreSQL only:
    start as many as you like next to `serve` processes started with AISTATS_RUN_WORKER=false."""
    settings = _settings(data_dir=data_dir, database_url=database_url, job_concurrency=concurrency, run_worker=True)
    from aistats_gateway import logs

    logs.configure(settings.log_level, settings.log_format)
    if settings.is_sqlite:
        err.print("[red]error:[/red] `worker` needs PostgreSQL (AISTATS_DATABASE_URL=postgresql+psycopg://…); "
                  "on SQLite, `serve` runs the jobs itself")
        raise typer.Exit(2)
    _migrate(settings)
    import signal

    from aistats_gateway.app import run_worker_forever

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_worker_forever(settings, stop)

    err.print(f"[green]aistats-gateway worker[/green] running (database: {_safe_url(settings.db_url)})")
    asyncio.run(main())


@app.command("fake-provider")
def fake_provider(
    name: Annotated[str, typer.Argument(help="Provider id, e.g. openai")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 9100,
    host: Annotated[str, typer.Option(help="Loopback address only")] = "127.0.0.1",
) -> None:
    """Run a fake of a provider's API on 127.0.0.1 (for trying the gateway without real keys)."""
    from aistats_gateway.providers import fakes

    if name not in fakes.FAKES:
        err.print(f"[red]error:[/red] no fake for {name!r}; available: {', '.join(sorted(fakes.FAKES))}")
        raise typer.Exit(2)
    try:
        fakes.serve(name, host=host, port=port)
    except ValueError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


@app.command()
def migrate(data_dir: DataDir = None, database_url: DatabaseURL = None) -> None:
    """Apply database migrations and exit."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    _migrate(settings)
    out.print("database is up to date")


# ---- keys -----------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A label for the key")],
    credits: Annotated[str | None, typer.Option("--credits", help="Credits in USD for its workspace")] = None,
    workspace: Annotated[str | None, typer.Option("--workspace", help="Existing workspace id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseURL = None,
) -> None:
    """Create an API key; the secret is printed once."""
    if not name.strip() or len(name) > 200:
        err.print("[red]error:[/red] --name must be 1..200 characters")
        raise typer.Exit(2)
    nanos = _usd_to_nanos(credits) if credits is not None else 0
    settings = _settings(data_dir=data_dir, database_url=database_url)
    _migrate(settings)
    from aistats_gateway.billing import accounts

    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            return await accounts.create_key(s, settings.pepper, name.strip(), workspace_id=workspace,
                                             credits_nanos=nanos)

    try:
        created = _run(work, settings)
    except LookupError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps({"id": created.id, "name": created.name, "key": created.key,
                                     "workspace_id": created.workspace_id}) + "\n")
        return
    out.print(f"id:        {created.id}")
    out.print(f"workspace: {created.workspace_id}")
    out.print(f"key:       [bold]{created.key}[/bold]")
    out.print("Store the key now; it cannot be shown again.")


@keys_app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseURL = None,
) -> None:
    """List keys (never their secrets)."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    _migrate(settings)
    from aistats_gateway.auth import service

    async def work(sessions: Any) -> Any:
        async with sessions() as s:
            return await service.list_keys(s)

    rows = _run(work, settings)
    if as_json:
        sys.stdout.write(json.dumps([{
            "id": r.id, "name": r.name, "workspace_id": r.workspace_id, "created_at": r.created_at.isoformat(),
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None} for r in rows]) + "\n")
        return
    table = Table("id", "name", "workspace", "created", "status")
    for r in rows:
        table.add_row(r.id, r.name, r.workspace_id, r.created_at.strftime("%Y-%m-%d %H:%M"),
                      f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, database_url: DatabaseURL = None) -> None:
    """Revoke a key; it stops working at once in every server process."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    _migrate(settings)
    from aistats_gateway.auth import service

    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            return await service.revoke(s, key_id)

    if not _run(work, settings):
        err.print(f"[red]error:[/red] no key with id {key_id}")
        raise typer.Exit(1)
    out.print(f"revoked {key_id}")


@keys_app.command("limits")
def keys_limits(
    key_id: str,
    rpm: Annotated[str | None, typer.Option("--rpm", help="Requests per minute (none = no limit)")] = None,
    tpm: Annotated[str | None, typer.Option("--tpm", help="Tokens per minute (none = no limit)")] = None,
    daily_usd: Annotated[str | None, typer.Option("--daily-usd", help="Spend per UTC day (none = no limit)")] = None,
    monthly_usd: Annotated[str | None, typer.Option("--monthly-usd", help="Spend per month (none = no limit)")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseURL = None,
) -> None:
    """Set a key's limits: over a spend limit → 402, over the request rate → 429 (before any provider call)."""
    from sqlalchemy import update

    from aistats_gateway.auth.tables import ApiKey

    values: dict[str, Any] = {}
    if rpm is not None:
        values["rpm_limit"] = _rpm(rpm)
    if tpm is not None:
        values["tpm_limit"] = _per_minute(tpm, "--tpm", "tokens")
    if daily_usd is not None:
        values["daily_spend_limit_nanos"] = _limit_nanos(daily_usd, "--daily-usd")
    if monthly_usd is not None:
        values["monthly_spend_limit_nanos"] = _limit_nanos(monthly_usd, "--monthly-usd")
    settings = _settings(data_dir=data_dir, database_url=database_url)
    _migrate(settings)

    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            if values:
                await s.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))
            return await s.get(ApiKey, key_id)

    row = _run(work, settings)
    if row is None:
        err.print(f"[red]error:[/red] no key with id {key_id}")
        raise typer.Exit(1)
    from aistats_gateway.billing.ledger import usd

    out.print(f"{key_id}: rpm={row.rpm_limit or 'unlimited'} tpm={row.tpm_limit or 'unlimited'} "
              f"daily={usd(row.daily_spend_limit_nanos) + ' USD' if row.daily_spend_limit_nanos else 'unlimited'} "
              "monthly="
              + (usd(row.monthly_spend_limit_nanos) + " USD" if row.monthly_spend_limit_nanos else "unlimited"))


@credits_app.command("add")
def credits_add(
    workspace: Annotated[str, typer.Argument(help="Workspace id (see `keys list`)")],
    amount: Annotated[str, typer.Argument(help="USD, e.g. 25 or 2.50")],
    memo: Annotated[str | None, typer.Option(help="A note for the ledger")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseURL = None,
) -> None:
    """Add credits to a workspace (a `credit` ledger entry)."""
    nanos = _usd_to_nanos(amount, "AMOUNT")
    settings = _settings(data_dir=data_dir, database_url=database_url)
    _migrate(settings)
    from sqlalchemy import update

    from aistats_gateway.auth.tables import Workspace
    from aistats_gateway.billing import ledger

    async def work(sessions: Any) -> Any:
        async with sessions() as s, s.begin():
            # Lock the row and check the new balance fits the BIGINT column before adding.
            fits = await s.execute(update(Workspace).where(
                Workspace.id == workspace, Workspace.balance_nanos <= MAX_NANOS - nanos)
                .values(balance_nanos=Workspace.balance_nanos))
            if getattr(fits, "rowcount", 0) != 1:
                bal = await ledger.balance(s, workspace)  # LookupError when it does not exist
                raise OverflowError(f"the balance would exceed {ledger.usd(MAX_NANOS)} USD (it is "
                                    f"{ledger.usd(bal.balance_nanos)} USD)")
            await ledger.credit(s, workspace, nanos, memo=memo or "added with the CLI")
            return await ledger.balance(s, workspace)

    try:
        bal = _run(work, settings)
    except LookupError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    except OverflowError as e:
        err.print(f"[red]error:[/red] cannot add {amount} USD to {workspace}: {e}")
        raise typer.Exit(2) from None
    out.print(f"{workspace}: balance {ledger.usd(bal.balance_nanos)} USD, held {ledger.usd(bal.held_nanos)} USD, "
              f"available {ledger.usd(bal.available_nanos)} USD")


@credits_app.command("show")
def credits_show(
    workspace: Annotated[str | None, typer.Argument(help="Workspace id (default: all)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseURL = None,
) -> None:
    """Balances (and, for one workspace, its recent ledger); the stored totals are checked against the ledger."""
    settings = _settings(data_dir=data_dir, database_url=database_url)
    _migrate(settings)
    from sqlalchemy import select

    from aistats_gateway.auth.tables import Workspace
    from aistats_gateway.billing import ledger

    async def work(sessions: Any) -> Any:
        async with sessions() as s:
            ids = [workspace] if workspace else list(
                (await s.execute(select(Workspace.id).order_by(Workspace.id))).scalars())
            rows = []
            for ws in ids:
                bal = await ledger.balance(s, ws)
                again = await ledger.recompute(s, ws)
                rows.append({"workspace_id": ws, "balance_nanos": bal.balance_nanos, "held_nanos": bal.held_nanos,
                             "available_nanos": bal.available_nanos, "ledger_agrees": bal == again,
                             "entries": await ledger.entries(s, ws, 20) if workspace else None})
            return rows

    try:
        rows = _run(work, settings)
    except LookupError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table("workspace", "balance USD", "held USD", "available USD", "ledger check")
    for r in rows:
        table.add_row(r["workspace_id"], ledger.usd(r["balance_nanos"]), ledger.usd(r["held_nanos"]),
                      ledger.usd(r["available_nanos"]), "ok" if r["ledger_agrees"] else "[red]MISMATCH[/red]")
    out.print(table)
    if workspace and rows[0]["entries"]:
        t2 = Table("id", "kind", "USD", "hold", "memo")
        for entry in rows[0]["entries"]:
            t2.add_row(str(entry["id"]), entry["kind"], entry["amount_usd"], entry["hold_id"] or "",
                       entry["memo"] or "")
        out.print(t2)


# ---- catalogue ------------------------------------------------------------------------------


@catalogue_app.command("validate")
def catalogue_validate(file: Annotated[Path | None, typer.Argument(help="Default: the shipped file")] = None) -> None:
    """Validate a catalogue file; errors name the entry and the field."""
    from aistats_gateway.catalogue import loader

    try:
        if file is None:
            cat, _ = loader.build(None)
            label = str(loader.shipped_path())
        else:
            overlay, _ = loader.load_file(file)
            cat, _ = loader.build(overlay, str(file))
            label = str(file)
    except loader.CatalogueError as e:
        err.print(f"[red]invalid catalogue[/red] {e.source}:")
        for p in e.problems:
            err.print(f"  - {p}")
        raise typer.Exit(1) from None
    out.print(f"{label}: ok ({len(cat.models)} models, {len(cat.providers)} providers, "
              f"{len(cat.organisations)} organisations in the effective catalogue)")


@catalogue_app.command("sync")
def catalogue_sync(
    file: Annotated[Path | None, typer.Argument(help="Your catalogue file (extends/overrides the shipped one)")] = None,
    clear_overlay: Annotated[bool, typer.Option("--clear-overlay", help="Drop a previously synced file")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseURL = None,
) -> None:
    """Load the catalogue into the database; running servers pick it up within a second."""
    from aistats_gateway.catalogue import loader, service

    settings = _settings(data_dir=data_dir, database_url=database_url)
    _migrate(settings)
    overlay = None
    if file is not None:
        try:
            overlay, _ = loader.load_file(file)
        except loader.CatalogueError as e:
            err.print(f"[red]invalid catalogue[/red] {e.source}:")
            for p in e.problems:
                err.print(f"  - {p}")
            raise typer.Exit(1) from None

    async def work(sessions: Any) -> Any:
        return await service.sync(sessions, overlay, str(file) if file else None, keep_overlay=not clear_overlay)

    try:
        result = _run(work, settings)
    except loader.CatalogueError as e:
        err.print(f"[red]invalid catalogue[/red] {e.source}:")
        for p in e.problems:
            err.print(f"  - {p}")
        raise typer.Exit(1) from None
    out.print(f"catalogue version {result.version}: {result.models} models, {result.providers} providers "
              f"({result.source})")


if __name__ == "__main__":  # pragma: no cover
    app()
