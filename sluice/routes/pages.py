"""``GET /``: the page."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def index() -> str:
    """The chat page, rendered with the default model preselected."""
    return render_template("index.html", default_model=current_app.config["SLUICE_DEFAULT_MODEL"])
