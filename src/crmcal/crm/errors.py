"""Errors the CRM raises for requests it refuses; the web layer maps them to HTTP."""


class CrmError(Exception):
    """Base class: ``str(error)`` is a message meant for the person who asked."""


class NotFound(CrmError):
    pass


class Invalid(CrmError):
    """The request is well-formed but its content is not acceptable."""


class Conflict(CrmError):
    """The request clashes with the current state (duplicate e-mail, type in use ...)."""


class Forbidden(CrmError):
    pass
