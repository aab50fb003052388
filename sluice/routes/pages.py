"""``GET /``: the page."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, make_response, render_template

bp = Blueprint("pages", __name__)

# Everything the page loads comes from Sluice itself; a model's answer can
# neither run script nor make the browser fetch elsewhere, even if sanitising failed.
# ``img-src data:`` is for the user's own attachments (thumbnails the page makes
# from IndexedDB); an answer never gets an <img> (markdown.js turns images into
# links, DOMPurify forbids the tag), and a data: URL fetches nothing.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@bp.get("/")
def index() -> Response:
    """The chat page, rendered with the default model preselected."""
    response = make_response(render_template("index.html", default_model=current_app.config["SLUICE_DEFAULT_MODEL"]))
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
