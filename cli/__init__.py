"""`parley`: the admin CLI and the composition root, the only package that imports every other.

Commands by area: :mod:`cli.tenants` (tenants, API keys), :mod:`cli.knowledge` (ingest, documents,
reindex, jobs), :mod:`cli.shopify`, :mod:`cli.widgets` (the web chat widget), :mod:`cli.analytics`, :mod:`cli.bus` (dead letters), :mod:`cli.processes` (up,
gateway, retrieval, workers, ask), :mod:`cli.ops` (migrate, config, status, doctor). What they
share is in :mod:`cli.app`; how each process is built, in :mod:`cli.compose`. Operations tools:
:mod:`cli.doctor`, :mod:`cli.supervisor`, :mod:`cli.migrations`. Nothing imports this package.
"""

from cli import bus, knowledge, ops, processes, shopify, tenants, widgets  # noqa: F401 - each registers its commands
from cli import eval as _eval  # noqa: F401 - registers `parley eval` (knowledge)
from cli import analytics as _analytics  # noqa: F401 - registers `parley analytics` (knowledge)
from cli import channels as _channels  # noqa: F401 - registers `parley channels` (connect, list, disconnect, rotate)
from cli import privacy as _privacy  # noqa: F401 - registers `parley erase`, `parley retention`, `parley tenants delete`
from cli import plans as _plans  # noqa: F401 - registers `parley plans`, `parley usage`
from cli import handoff as _handoff  # noqa: F401 - registers `parley handoff` (config, list, show, take, resolve, hand-back)
from cli import passthrough as _passthrough  # noqa: F401 - registers `parley tenants api-uploads`, `parley process`
from cli import webhooks as _webhooks  # noqa: F401 - registers `parley webhooks` (outbound webhooks)
from cli.app import main

__all__ = ["main"]
