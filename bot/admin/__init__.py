"""The admin dashboard served by the gateway under ``/admin`` (see `bot.admin.routes`)."""
