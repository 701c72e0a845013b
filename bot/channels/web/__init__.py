"""Web chat and the tenant admin API (API-key authenticated), with a static chat page."""
