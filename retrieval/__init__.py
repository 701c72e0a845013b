"""The retrieval service: the answer path (latency work), ``POST /v1/query``.

Modules, edge first: ``app`` (factory, resources, `serve`), ``routes`` (HTTP), ``service`` (the
answer path), ``rewrite`` (follow-ups), ``cache`` (answer cache), ``fusion`` (convex or RRF), ``context``
(relevance, de-duplication, token budget), ``products`` (shopping constraints), ``answer``
(OpenAI and extractive answerers), ``repository`` (tenant rows), ``metrics``, ``config``.

Other packages import only ``retrieval.client`` and ``retrieval.schemas``; this file imports
nothing, so importing those two stays cheap (no model runtime, no database driver).
"""
