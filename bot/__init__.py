"""The gateway process: Slack, Instagram, Shopify webhooks, web chat and the admin API."""
