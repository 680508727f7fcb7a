"""The recommendation service: REST API (FastAPI on uvicorn), live feedback, hot model swap.

`create_app(Settings(...))` builds the app; `lmrec serve` runs it. See app.py for the
endpoints and live.py for how feedback, new items and deletions reach the answers.
"""

from lmrec.service.settings import Settings


def create_app(settings: Settings | None = None):
    """The FastAPI application of the service (see lmrec.service.app)."""
    from lmrec.service.app import create_app as _create

    return _create(settings)


__all__ = ["Settings", "create_app"]
