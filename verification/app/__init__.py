"""The merchandisers' review web app (FastAPI, server-rendered pages plus a JSON API under /api/).

    from verification.app import ReviewAppConfig, create_app
    app = create_app(ReviewAppConfig(db_url="sqlite:///.shelfwise/queue.db",
                                     taxonomy_path="shopify_categories_2025-01.en.txt",
                                     extra_taxonomy_paths=["shopify_categories_2025-01.ko.txt"],
                                     image_root="data"))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Pages: ``/login``, ``/queues`` (counts, filters, pagination), ``/items/{id}`` (photo, text, suggestion,
candidates, taxonomy search, decisions, keyboard shortcuts), ``/bulk-accept`` and ``/admin/users`` (admins).
API: ``/api/...`` (see ``/openapi.json``). Auth, roles and CSRF rules: :mod:`verification.app._auth`.
"""

from __future__ import annotations

from ._factory import ReviewAppConfig, create_app

__all__ = ["ReviewAppConfig", "create_app"]
