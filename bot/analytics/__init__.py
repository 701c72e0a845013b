"""Analytics a store owner reads: outcomes, resolution, feedback, latency, handoffs and the to-do list.

`service.build_report` computes one typed `schemas.AnalyticsReport` for a tenant and a window
(`service.parse_since`); `repository` holds its queries, `similarity` groups the to-do list. The
dashboard's page is `bot.admin.analytics`, the CLI's `parley analytics` (cli/analytics.py).
"""
