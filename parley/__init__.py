"""Parley's kernel: what every process shares (settings, db + repository base, errors, logging,
crypto, blobs, the bus with every message contract and the outbox, vectors, embeddings, the one
HTTP error map and the one worker bootstrap).

Nothing in this package imports another Parley package; the composition root is the `cli` package.
"""

__version__ = "0.1.0"
