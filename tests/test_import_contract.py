"""The import boundaries of ../shared/style.md, checked on the source (every import, even inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("parley", "tenants", "knowledge", "bot", "retrieval", "ingestion", "integrations", "cli", "webhooks", "passthrough")

# package -> the packages of ours it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "parley": set(),
    "tenants": {"parley"},
    "integrations": {"parley"},
    "knowledge": {"parley", "tenants"},
    "webhooks": {"parley", "tenants"},  # outbound webhooks: endpoints, deliveries, their consumer
    "passthrough": {"parley", "tenants", "webhooks"},  # pass-through processing: requests, sealed uploads, delivery
    "retrieval": {"parley", "tenants", "knowledge"},
    "ingestion": {"parley", "tenants", "knowledge", "integrations.shopify", "webhooks", "passthrough"},
    "bot": {"parley", "tenants", "knowledge", "integrations.shopify", "retrieval.client", "retrieval.schemas",
            "retrieval.replicas", "webhooks", "passthrough"},
    "cli": {"parley", "tenants", "knowledge", "integrations", "bot", "retrieval", "ingestion", "webhooks",
            "passthrough"},  # the composition root
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _allowed(importer: str, imported: str) -> bool:
    top = imported.split(".")[0]
    if top not in OURS:
        return True
    package = importer.split(".")[0]
    if imported == package or imported.startswith(package + "."):
        if importer.startswith("bot.conversation") and imported.startswith("bot.channels"):
            return False  # the conversation core is channel-neutral
        return True
    return any(imported == ok or imported.startswith(ok + ".") for ok in ALLOWED[package]) or (
        # `from retrieval import client` names the allowed module through its package
        package == "bot" and imported in ("retrieval",)
    )


def test_packages_respect_the_import_contract() -> None:
    violations = []
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for lineno, imported in _imports(path):
                if not _allowed(module, imported):
                    violations.append(f"{path.relative_to(ROOT)}:{lineno} imports {imported}")
    # `from X import name` also yields X.name; only report names that are modules of ours
    real = [v for v in violations if _is_module(v.rsplit(" ", 1)[1])]
    assert real == [], "import contract broken:\n" + "\n".join(real)


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_the_checker_catches_a_violation() -> None:
    assert not _allowed("parley.db", "tenants.models")
    assert not _allowed("retrieval.service", "ingestion.documents")
    assert not _allowed("bot.conversation.service", "bot.channels.slack")
    assert not _allowed("tenants.service", "bot.models")
    assert _allowed("bot.channels.slack", "retrieval.client")
    assert not _allowed("bot.channels.slack", "retrieval.service")
    assert _allowed("cli.compose", "bot.app")
    assert not _allowed("bot.app", "cli.compose")  # nothing imports the composition root
    assert not _allowed("parley.worker", "ingestion.documents")
    assert not _allowed("knowledge.service", "bot.models")
    assert _allowed("ingestion.catalog.sync", "knowledge.service")
    assert not _allowed("integrations.shopify.client", "knowledge.service")  # the adapter stays pure
