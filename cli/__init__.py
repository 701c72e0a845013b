"""`parley`: the admin CLI and the composition root, the only package that imports every other.

Commands by area: :mod:`cli.tenants` (tenants, API keys), :mod:`cli.knowledge` (ingest, documents,
reindex, jobs), :mod:`cli.shopify`, :mod:`cli.widgets` (the web chat widget), :mod:`cli.bus` (dead letters), :mod:`cli.processes` (up,
gateway, retrieval, workers, ask), :mod:`cli.ops` (migrate, config, status, doctor). What they
share is in :mod:`cli.app`; how each process is built, in :mod:`cli.compose`. Operations tools:
:mod:`cli.doctor`, :mod:`cli.supervisor`, :mod:`cli.migrations`. Nothing imports this package.
"""

from cli import bus, knowledge, ops, processes, shopify, tenants, widgets  # noqa: F401 - each registers its commands
from cli import eval as _eval  # noqa: F401 - registers `parley eval` (knowledge)
from cli.app import main

__all__ = ["main"]
