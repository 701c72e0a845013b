"""The tenant's knowledge base: documents, chunks, bulk jobs and their items, catalog products.

Shared by the gateway (uploads), the workers (indexing) and the retrieval service (citations):
``models`` (tables), ``repository`` (tenant-scoped queries), ``service`` (uploads, job counters and
reports, deletion, restores, re-indexing, catalog sync requests), ``audit`` (who changed what, and
when). Imports only the kernel and ``tenants``.
"""
