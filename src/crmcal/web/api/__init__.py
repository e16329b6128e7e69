"""The REST API under ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from crmcal.web.api import activities, activity_types, connections, contacts, users
from crmcal.web.deps import authenticate, bearer

router = APIRouter(prefix="/api/v1", dependencies=[Depends(bearer), Depends(authenticate)])
for module in (users, activity_types, activities, contacts, connections):
    router.include_router(module.router)
router.include_router(activities.series_router)
