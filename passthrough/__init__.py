"""Pass-through processing: a file extracted, chunked and embedded exactly as for indexing, the
result delivered to one of the tenant's webhook endpoints, and nothing kept.

``POST /api/v1/process`` (the gateway, `bot.channels.web.process`) seals the upload with the
platform's key into a temporary file (`store`), records a `models.ProcessRequest` (metadata
only: no file name, no text, no vector) and stages ``document.process_requested`` (ids only).
The document worker (`ingestion.documents.passthrough`) opens the sealed file, runs the same
sandboxed extraction, chunking and embedding as indexing, delivers the result signed the
Standard Webhooks way (`delivery`), and deletes the sealed file once the result was delivered
or the request finally failed. No document, chunk, vector, job or dead-letter row ever holds
the content.
"""
