"""integrations/shopify"""
