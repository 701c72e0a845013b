"""Shopify edge of the gateway: OAuth install + callback, webhooks, and the CLI's custom-app connect.

``setup_shopify(app, settings=..., sessions=..., box=...)`` adds the routes; ``connect_custom_app``
backs ``parley shopify connect``; ``install_link`` makes the signed link a tenant's admin shares.
"""

from bot.channels.shopify.routes import SHOPIFY, ShopifyGateway, setup_shopify
from bot.channels.shopify.service import Connected, connect_custom_app, install_link

__all__ = ["SHOPIFY", "Connected", "ShopifyGateway", "connect_custom_app", "install_link", "setup_shopify"]
