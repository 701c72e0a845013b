"""Instagram Messaging: webhook verification, signed events, Graph Send API replies."""
