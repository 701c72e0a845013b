"""Vendor edges of the gateway: each turns its webhooks into `IncomingMessage`s and implements
`bot.conversation.schemas.Channel` to reply. `bot/channels/shopify/` belongs to the Shopify adapter."""
