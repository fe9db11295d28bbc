"""``/api/people/<id>/templates`` and ``/api/templates/<id>``: a person's face templates, one
template's crop, and removing a template enrolled under the wrong name (the person and their
other templates stay). Through :mod:`device.templates`, as the CLI and the page."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from device import templates
from device.errors import TemplateNotFound
from device.gallery.store import Template
from device.web.api._common import _error, admin_only, bp, json_body, query_args
from device.web.api.people import _find_person
from device.web.db import gallery
from device.web.roles import current_user


@bp.errorhandler(TemplateNotFound)
def _template_not_found(error: TemplateNotFound) -> ResponseReturnValue:
    return _error(404, str(error))


@bp.get("/people/<person_id>/templates")
@admin_only
def person_templates(person_id: str) -> ResponseReturnValue:
    query_args(())
    person = _find_person(person_id)
    return jsonify(templates=[_template_json(template)
                              for template in templates.templates_of(gallery(), person.id)])


@bp.delete("/templates/<template_id>")
@admin_only
def template_remove(template_id: str) -> ResponseReturnValue:
    json_body({})
    user = current_user()
    removed = templates.remove_template(gallery(), template_id,
                                        user=user.name if user else None,
                                        address=request.remote_addr)
    return jsonify({**_template_json(removed), "crop_url": None})


@bp.get("/templates/<template_id>/crop")
@admin_only
def template_crop(template_id: str) -> ResponseReturnValue:
    return Response(templates.crop_of(gallery(), template_id), mimetype="image/jpeg")


def _template_json(template: Template) -> dict[str, Any]:
    data = templates.template_json(template)
    data["crop_url"] = (url_for("api.template_crop", template_id=template.id)
                        if data["has_crop"] else None)
    return data
