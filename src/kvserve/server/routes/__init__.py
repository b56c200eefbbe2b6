"""HTTP routes, one module per endpoint group; each exports `router`."""

from kvserve.server.batches import batch_routes, file_routes
from kvserve.server.routes import admin, chat, completions, models, system

ROUTERS = [chat.router, completions.router, models.router, system.router, admin.router, file_routes.router,
           batch_routes.router]
