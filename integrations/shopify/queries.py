"""The GraphQL documents the adapter sends (Admin API 2026-10). Named operations, so a log line or
an emulator can tell them apart."""

from __future__ import annotations

PRODUCT_FIELDS = """
  id
  title
  handle
  vendor
  productType
  tags
  description
  status
  updatedAt
  totalInventory
  options { name values }
  priceRangeV2 { minVariantPrice { amount currencyCode } maxVariantPrice { amount currencyCode } }
"""

VARIANT_FIELDS = """
  id
  title
  sku
  price
  availableForSale
  inventoryQuantity
  selectedOptions { name value }
"""

SHOP = """
query ParleyShop {
  shop { name myshopifyDomain currencyCode }
  currentAppInstallation { accessScopes { handle } }
}
"""

PRODUCTS_COUNT = """
query ParleyProductsCount($query: String) {
  productsCount(query: $query, limit: null) { count precision }
}
"""

PRODUCTS_PAGE = (
    """
query ParleyProducts($first: Int!, $after: String, $variantsFirst: Int!, $query: String) {
  products(first: $first, after: $after, query: $query, sortKey: ID) {
    nodes {"""
    + PRODUCT_FIELDS
    + """
      variants(first: $variantsFirst) {
        nodes {"""
    + VARIANT_FIELDS
    + """}
        pageInfo { hasNextPage endCursor }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""
)

PRODUCT_VARIANTS = (
    """
query ParleyProductVariants($id: ID!, $first: Int!, $after: String) {
  product(id: $id) {
    variants(first: $first, after: $after) {
      nodes {"""
    + VARIANT_FIELDS
    + """}
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
)

#: The bulk export's own query: no page sizes (a bulk operation has no cost limit); the variant rows
#: come back as separate JSONL lines carrying ``__parentId``.
BULK_PRODUCTS_QUERY = (
    """
{
  products(query: "status:active") {
    edges {
      node {"""
    + PRODUCT_FIELDS
    + """
        variants {
          edges {
            node {"""
    + VARIANT_FIELDS
    + """}
          }
        }
      }
    }
  }
}
"""
)

BULK_RUN = """
mutation ParleyBulkProducts($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}
"""

BULK_STATUS = """
query ParleyBulkStatus($id: ID!) {
  bulkOperation(id: $id) {
    id status errorCode objectCount rootObjectCount url partialDataUrl
  }
}
"""

WEBHOOK_CREATE = """
mutation ParleyWebhookCreate($topic: WebhookSubscriptionTopic!, $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}
"""
