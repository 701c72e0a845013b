"""``python -m ingestion.catalog``: the catalog worker, until ``parley worker catalog`` is wired."""

from __future__ import annotations

import asyncio

from ingestion.catalog.consumer import run_catalog_worker
from parley.logging import configure_logging
from parley.settings import Settings


def main() -> None:
    settings = Settings()
    configure_logging(process_name="catalog-worker", level=settings.log_level, json_lines=settings.log_json)
    asyncio.run(run_catalog_worker(settings))


if __name__ == "__main__":
    main()
