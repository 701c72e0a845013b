"""The channel-neutral conversation core: inbound messages, answering, uploads, notices.

It never imports `bot.channels`: channels depend on it, through the `Channel` protocol and the
`IncomingMessage` / `Reply` types of `bot.conversation.schemas`.
"""
