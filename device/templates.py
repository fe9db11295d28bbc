"""Face templates as things of their own: list a person's, read one's crop, remove a wrong one.

The one service below the CLI (``facegate templates``), the JSON API (``/api/templates``) and
the person page, so a template enrolled under the wrong name is removed the same way, and
recorded the same way, whichever front removes it. Removing a template leaves the person and
their other templates as they are; the door's matcher drops it at its next reload (the
gallery's change counter moves).
"""

from __future__ import annotations

from typing import Any

from device.audit import record_in
from device.errors import PersonNotFound, TemplateNotFound
from device.gallery.store import Gallery, Template


def template_json(template: Template) -> dict[str, Any]:
    """A template as the fronts show it: never the embedding nor the crop's bytes.

    ``created``/``updated`` are UTC ISO 8601 text ending in ``Z``; ``source`` is the front
    that enrolled it ("upload", "capture", "cli", "api"), None for a template enrolled before
    sources were recorded. ``damaged`` says why a row of a hand-edited file does not decode
    (None for a sound template): the door ignores such a template; remove it.
    """
    return {
        "id": template.id,
        "person_id": template.person_id,
        "model": template.model,
        "source": template.source,
        "quality": dict(template.quality),
        "has_crop": template.crop_jpeg is not None,
        "created": template.created_at,
        "updated": template.updated_at,
        "version": template.version,
        "damaged": template.damaged,
    }


def templates_of(gallery: Gallery, person_key: str) -> list[Template]:
    """Every template (of every model) of the person whose id, or else name, is
    ``person_key``, oldest first. Raises :class:`~device.errors.PersonNotFound`."""
    person = gallery.get_person(person_key)
    return gallery.list_templates(person.id)


def get_template(gallery: Gallery, template_id: str) -> Template:
    """The template with that id; raises :class:`~device.errors.TemplateNotFound`."""
    try:
        return gallery.get_template(template_id)
    except LookupError:
        raise TemplateNotFound(_missing(template_id)) from None


def crop_of(gallery: Gallery, template_id: str) -> bytes:
    """The aligned face crop (JPEG bytes) the template was computed from. Raises
    :class:`~device.errors.TemplateNotFound` when there is no such template, or when it
    was enrolled without keeping its crop."""
    template = get_template(gallery, template_id)
    if template.crop_jpeg is None:
        raise TemplateNotFound(f"template {template_id!r} was enrolled without keeping its "
                               "face crop")
    return template.crop_jpeg


def remove_template(gallery: Gallery, template_id: str, *, user: str | None,
                    address: str | None = None) -> Template:
    """Remove one template (and its crop) and write the ``template_remove`` audit row as
    ``user`` from ``address``; return the template as it was.

    Raises :class:`~device.errors.TemplateNotFound` when there is no such template (also
    when another front removed it a moment before): nothing is removed nor recorded then.
    The removal and its audit row are two transactions (the store's and the log's): a crash
    in between leaves the template removed without its row, never a row without a removal.
    """
    try:
        person = gallery.get_person(get_template(gallery, template_id).person_id)
    except PersonNotFound:  # deleted meanwhile, with their templates
        raise TemplateNotFound(_missing(template_id)) from None
    try:
        template = gallery.remove_template(template_id)
    except LookupError:
        raise TemplateNotFound(_missing(template_id)) from None
    record_in(gallery, "template_remove",
              {"person_id": person.id, "name": person.name, "template_id": template.id,
               "model": template.model, "source": template.source}, user, address)
    return template


def _missing(template_id: str) -> str:
    return f"no template with id {template_id!r} is in the gallery"
