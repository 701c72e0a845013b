"""The catalog worker: Shopify stores synced into the tenant's index (see consumer, sync, service)."""
