"""The site server's own page: its doors, each with its last contact, the change seq its
replica has reached against the site's, and the events it still has to send up."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, url_for
from werkzeug.wrappers import Response

from device.gallery.store import Gallery
from device.site.doors import list_doors
from device.web.roles import login_required

bp = Blueprint("site_page", __name__)


@bp.get("/site/doors")
@login_required
def doors() -> str:
    database = current_app.config["DATABASE"]
    with Gallery(database) as gallery:
        head = gallery.change_seq()
        counts = gallery.counts()
    return render_template("site_doors.html", doors=list_doors(database), head=head,
                           counts=counts)


def home() -> Response:
    """A site has no door of its own: its home page is the doors'."""
    return redirect(url_for("site_page.doors"))
