"""Untrusted document files -> structured text -> chunks.

Entry points other code calls:
- `sandbox.extract_document` / `sandbox.extract_document_sync`: sniff + extract in a limited child process
- `chunking.chunk_document`: structure-aware chunks of an `ExtractedDocument`
Errors are `errors.ExtractionError` subclasses with a stable `code`.
"""
