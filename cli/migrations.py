"""Run Alembic from code (`parley migrate`, `parley up`, tests) against a URL or a live connection."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.errors import ConfigurationError

_ROOT = Path(__file__).resolve().parent.parent



def load_models() -> None:
    """Import every module that declares tables, so Base.metadata holds the whole schema (Alembic's
    autogenerate and the tests compare against it). Real imports: the import-contract test sees them."""
    import bot.models
    import knowledge.models
    import parley.bus.models
    import parley.vectors.models
    import tenants.models  # noqa: F401
    import tenants.quota_models  # noqa: F401
    import tenants.retention  # noqa: F401
    import tenants.handoff  # noqa: F401
    import webhooks.models  # noqa: F401
    import passthrough.models  # noqa: F401


def alembic_config(url: str | None = None) -> Config:
    ini = _ROOT / "alembic.ini"
    if not ini.exists():
        raise ConfigurationError(f"alembic.ini not found beside the parley package ({ini}); run from a source checkout")
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(_ROOT / "alembic"))
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


def _with_connection(fn, revision: str):  # type: ignore[no-untyped-def]
    def run(sync_connection):  # type: ignore[no-untyped-def]
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_connection
        fn(cfg, revision)

    return run


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_with_connection(command.upgrade, revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_with_connection(command.downgrade, revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        heads = await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
    return ",".join(sorted(heads)) or None


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ",".join(sorted(ScriptDirectory.from_config(alembic_config()).get_heads())) or None
