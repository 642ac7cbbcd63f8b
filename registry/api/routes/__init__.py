"""One APIRouter per resource; registry.api.app includes them all."""

from registry.api.routes import access, adapters, catalog, events, files, health, hf, hub, jobs, webhooks

ROUTERS = (health.router, adapters.router, files.router, hub.router, catalog.router, jobs.router, hf.router,
           hf.lora_router, access.router, events.router, webhooks.router)
