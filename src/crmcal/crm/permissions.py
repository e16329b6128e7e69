"""Who may do what: the permission names and the checks built on them (F6)."""

from __future__ import annotations

from crmcal.crm.errors import Forbidden
from crmcal.crm.tables import Activity, ActivitySeries, User

CALENDAR_SYNC = "calendar_sync"
ACTIVITIES_VIEW = "activities.view"
ACTIVITIES_CREATE = "activities.create"
ACTIVITIES_EDIT = "activities.edit"
ACTIVITIES_DELETE = "activities.delete"
# Persons, organizations and deals.
CONTACTS_VIEW = "contacts.view"
CONTACTS_EDIT = "contacts.edit"

ALL = (
    CALENDAR_SYNC,
    ACTIVITIES_VIEW,
    ACTIVITIES_CREATE,
    ACTIVITIES_EDIT,
    ACTIVITIES_DELETE,
    CONTACTS_VIEW,
    CONTACTS_EDIT,
)
# A new user can work with activities and contacts and connect a calendar unless an
# admin says otherwise.
DEFAULT = ALL


def has(user: User, permission: str) -> bool:
    return user.is_admin or permission in (user.permissions or [])


def require(user: User, permission: str) -> None:
    if not has(user, permission):
        raise Forbidden(f"you lack the permission {permission!r}; an admin can grant it")


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise Forbidden("only an admin may do this")


def can_see_details(user: User, activity: Activity | ActivitySeries) -> bool:
    """False when the viewer may see only a busy block of someone's private activity.

    Admins included: "owner" visibility is the calendar owner's privacy, not a role.
    """
    return activity.visibility == "everyone" or activity.owner_id == user.id


def require_owner_or_admin(user: User, activity: Activity, action: str) -> None:
    if activity.owner_id != user.id and not user.is_admin:
        raise Forbidden(f"only the owner or an admin may {action} another user's activity")
