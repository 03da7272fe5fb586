"""The HTTP API of obsqc (FastAPI): ``create_app(settings)``; see ``routes.py`` for the endpoints."""

from obsqc.service.api.app import create_app

__all__ = ["create_app"]
