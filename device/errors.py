"""Errors a user can cause, caught at the edges (CLI, web) and shown as one sentence."""


class FacegateError(Exception):
    """Base class: the message is meant for the user as it is; ``code`` names the kind for
    scripts (the JSON outputs of the CLI and the API)."""

    code = "error"


class ImageUnreadable(FacegateError):
    """The file is missing, empty, truncated or not an image OpenCV can decode."""

    code = "unreadable"


class NoFaceFound(FacegateError):
    """No face was detected in the image."""

    code = "no_face"


class SeveralFaces(FacegateError):
    """More than one face of similar prominence was found where one is needed (enrolment).

    ``faces`` lists the candidates for a front end to show, each a dict with at least
    ``index`` (into the pipeline's faces, largest first) and ``box`` ([x1, y1, x2, y2] in
    frame pixels), so the admin can pick one; None when not known.
    """

    code = "several_faces"

    def __init__(self, message: str, faces: list[dict] | None = None) -> None:
        super().__init__(message)
        self.faces = faces


class PoorQuality(FacegateError):
    """A face was found but is too small, blurred, dark or turned away to be trusted."""

    code = "poor_quality"


class ModelNotFound(FacegateError):
    """The named model (or its card) is not in the models directory."""


class ModelMismatch(FacegateError):
    """Templates or cards do not belong to the model in use."""

    code = "model_mismatch"


class PersonNotFound(FacegateError):
    """No person with that name or id is in the gallery."""


class DuplicateTemplate(FacegateError):
    """This image (the same bytes, under the same model) is already enrolled."""

    code = "already_enrolled"


class TemplateNotFound(FacegateError):
    """No face template with that id is in the gallery (or it has no stored crop)."""


class CameraError(FacegateError):
    """The camera cannot be opened or stopped delivering frames (unplugged, busy, gone)."""


class EndOfStream(CameraError):
    """A replay without looping has played its last frame (not a fault: ``--exit-at-end``)."""


class ConfigError(FacegateError):
    """The configuration file, an environment variable or a command-line override is wrong:
    the message names the key, where it came from, and what is allowed."""


class TimeUnreadable(FacegateError):
    """A time given by the user (``--since``) is neither an ISO date/time nor an age like 2h."""


class EventNotFound(FacegateError):
    """No event with that id is in the access log."""


class SettingInvalid(ConfigError):
    """A site setting changed on the admin page is not allowed; ``key`` names the setting
    (a dotted config key) so that the page can show the message beside its field."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class UserExists(FacegateError):
    """An admin page account with that name already exists."""


class WeakPassword(FacegateError):
    """A new password is too short (or too long) to accept."""


class AccountDisabled(FacegateError):
    """The right password for an account an admin has disabled: it may not sign in."""


class WrongPassword(FacegateError):
    """The current password given to change one's own password is not the account's."""


class AccountProtected(FacegateError):
    """An account change the rules refuse: the door's last active admin disabled, removed
    or made a viewer, or an admin disabling or removing their own account."""


class TokenNotFound(FacegateError):
    """No API token with that id exists."""


class RestoreRefused(FacegateError):
    """An uploaded file is not a facegate database this version can restore (not SQLite,
    corrupt, another program's, or written by a newer facegate); nothing was changed."""


class RequestInvalid(FacegateError):
    """A JSON API request is missing a field, has one of the wrong type, or one it does not
    know; ``field`` names it (None when the request as a whole is wrong)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class IdentityConflict(FacegateError):
    """An enrolment photo whose face says it is someone else than the name it is filed under.

    An admin may override it after looking (``--force`` with a reason on the CLI, a confirm
    step on the page and in the API); the override is audited. ``similarity`` is the cosine
    that decided, ``other`` the other person's name where there is one.
    """

    code = "identity_conflict"

    def __init__(self, message: str, *, similarity: float, other: str | None = None,
                 other_id: str | None = None) -> None:
        super().__init__(message)
        self.similarity = similarity
        self.other = other
        self.other_id = other_id


class NotSamePerson(IdentityConflict):
    """A new photo for an enrolled person does not look like their enrolled photos."""

    code = "not_same_person"


class AlreadyEnrolledAs(IdentityConflict):
    """The face in the photo already matches another enrolled person."""

    code = "already_enrolled_as"


class FaceChanged(IdentityConflict):
    """During a capture, the face in front of the camera stopped being the same person."""

    code = "face_changed"


class NameInvalid(FacegateError):
    """A name typed by a person (a person's name or external id, an account's or an API
    token's name) is empty, too long, or holds control or direction-changing characters;
    ``field`` names the form field or JSON key it came in."""

    code = "name_invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ImageTooLarge(ImageUnreadable):
    """An image whose header declares more pixels than allowed (a "decompression bomb": a
    small file that would decode to gigabytes), or a file over the byte limit; refused before
    it is decoded or read whole. Its ``code`` stays "unreadable", the API's documented code."""


class GalleryUnreadable(FacegateError):
    """The gallery file exists but is no usable database: corrupt, truncated, empty (0 bytes)
    or another program's file. Nothing was changed; the message names the file and says how
    to restore a backup."""

    code = "gallery_unreadable"


class RecordUnwritable(FacegateError):
    """The record that permits a door action (its audit row) could not be written: the
    disk is full, the database is locked or unwritable. The door was left as it was."""

    code = "record_unwritable"


class PresentationAttack(FacegateError):
    """A face captured from the door camera that the liveness check judged not live: a photo
    or a screen held up to the camera. Not overridable: capture the person themselves, or
    enrol a photo by upload. ``score`` is the liveness score (None: it could not be scored)."""

    code = "presentation_attack"

    def __init__(self, message: str, *, score: float | None = None) -> None:
        super().__init__(message)
        self.score = score


class CommandRefused(FacegateError):
    """A command that reached the door over MQTT was refused: malformed, an unknown action,
    stale or replayed (its time too old, its nonce seen before), retained by the broker, or
    its audit row could not be written. The door was left as it was."""

    code = "command_refused"


class DataDirInUse(FacegateError):
    """Another ``facegate run`` holds the data folder's lock: two daemons on one database
    would both drive the relay and race on the access log."""

    code = "data_dir_in_use"


class ReplicaReadOnly(FacegateError):
    """This door is a member of a site (``[site] url``): its gallery is the site's replica,
    changed by the site only. Enrol, edit and remove people at the site server's page or
    CLI; the door picks the change up within a minute."""

    code = "replica_read_only"


class SiteUnreachable(FacegateError):
    """The site server could not be reached, or answered with an error, on the sync API. A
    member door goes on deciding from its replica and tries again."""

    code = "site_unreachable"
