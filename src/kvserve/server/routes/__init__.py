"""HTTP routes, one module per endpoint group; each exports `router`."""

from kvserve.server.routes import admin, chat, completions, models, system

ROUTERS = [chat.router, completions.router, models.router, system.router, admin.router]
