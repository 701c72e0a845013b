"""Tenants, their channel installations (Slack team / Instagram account / Shopify shop -> tenant), API keys."""
