"""The tenant's knowledge base: documents, chunks, bulk jobs and their items, catalog products.

Shared by the gateway (uploads), the workers (indexing) and the retrieval service (citations):
``models`` (tables), ``repository`` (tenant-scoped queries), ``service`` (uploads, job counters and
reports, deletion, re-indexing, catalog sync requests). Imports only the kernel and ``tenants``.
"""
