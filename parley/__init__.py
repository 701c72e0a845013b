"""Parley's kernel: what every process shares (settings, db, bus, vectors, embeddings, blobs, errors, logging).

Nothing in this package imports another Parley package, except `parley.cli`, the composition root.
"""

__version__ = "0.1.0"
