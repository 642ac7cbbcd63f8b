"""One APIRouter per resource; registry.api.app includes them all."""

from registry.api.routes import adapters, catalog, files, health, hf, hub, jobs

ROUTERS = (health.router, adapters.router, files.router, hub.router, catalog.router, jobs.router, hf.router,
           hf.lora_router)
