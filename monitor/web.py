"""HTTP helpers shared by the views: who gets HTML, and an error in the form the client reads."""

from __future__ import annotations

from typing import Any

from flask import jsonify, render_template, request


def wants_html() -> bool:
    """A browser asking (text/html preferred); curl's */* and scripts get JSON."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "text/html"
        and request.accept_mimetypes["text/html"] > request.accept_mimetypes["application/json"]
    )


def wants_json() -> bool:
    """Whether an error here is answered in JSON: the dashboard's own paths get a page."""
    if request.path == "/" or request.path.startswith(("/ui/", "/static/")):
        return False
    return not wants_html()


def error_response(status: int, message: str) -> Any:
    """The error as JSON ({"error", "status"}) or as the error page."""
    if wants_json():
        response = jsonify({"error": message, "status": status})
        response.status_code = status
        return response
    return render_template("error.html", status=status, message=message), status
