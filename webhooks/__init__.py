"""Outbound webhooks: tenants' endpoints, their signed deliveries (Standard Webhooks) and the
worker that fans tenant events out to them (queue ``webhooks``)."""
