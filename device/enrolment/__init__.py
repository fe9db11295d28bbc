"""Enrolment: photos of a person -> templates in the gallery, or a clear refusal.

:mod:`device.enrolment.service` holds every rule and is the only way the CLI, the page, the
capture flow and the API enrol; :mod:`device.enrolment.subject` picks the face of a photo.
"""

from device.enrolment.service import (
    CROP_JPEG_QUALITY,
    Actor,
    Capture,
    Enrolled,
    EnrolmentPolicy,
    EnrolmentService,
    Examined,
)

__all__ = ["CROP_JPEG_QUALITY", "Actor", "Capture", "Enrolled", "EnrolmentPolicy",
           "EnrolmentService", "Examined"]
