"""The door's side of the sync API: JSON over HTTP(S) to the site server, with the door's
credential as a bearer token (the standard library's client: the door needs nothing else).

Every failure is one :class:`~device.errors.SiteUnreachable` with a sentence: the server away,
a refused credential, a certificate that does not check, an answer that is no JSON.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from device.errors import SiteUnreachable

MAX_ANSWER_BYTES = 64 * 2**20  # a page of 1,000 templates is about 1 MB of JSON


class SiteClient:
    """Talks to the site at ``url`` (``https://site.example:8443``) as the door whose
    credential is ``token``; ``ca_file`` trusts a site certificate of the site's own CA."""

    def __init__(self, url: str, token: str, *, ca_file: Path | None = None,
                 timeout_s: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self._context = (ssl.create_default_context(cafile=str(ca_file)) if ca_file
                         else ssl.create_default_context())

    @classmethod
    def from_config(cls, site: Any) -> SiteClient:
        """From ``config.site``: the credential is the first line of ``token_file``."""
        if site.token_file is None:
            raise SiteUnreachable("site.token_file is not set: save the credential that "
                                  "`facegate site door add` printed, and name that file")
        try:
            token = Path(site.token_file).read_text().strip().splitlines()[0]
        except (OSError, IndexError) as error:
            raise SiteUnreachable(f"cannot read the site credential {site.token_file}: "
                                  f"{getattr(error, 'strerror', None) or 'it is empty'}"
                                  ) from None
        return cls(site.url, token, ca_file=site.ca_file)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return self._call("GET", path + (f"?{query}" if query else ""))

    def get_bytes(self, path: str) -> bytes:
        return self._call("GET", path, raw=True)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, json.dumps(body).encode(), "application/json")

    def put(self, path: str, data: bytes, content_type: str) -> dict[str, Any]:
        return self._call("PUT", path, data, content_type)

    def _call(self, method: str, path: str, data: bytes | None = None,
              content_type: str | None = None, *, raw: bool = False) -> Any:
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        if content_type:
            request.add_header("Content-Type", content_type)
        where = f"the site {self.url}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s,
                                        context=self._context) as answer:
                body = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise SiteUnreachable(f"{where} refused {method} {path.split('?')[0]}: "
                                  f"{error.code} {_message(error)}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise SiteUnreachable(f"{where} cannot be reached: {reason}") from None
        if len(body) > MAX_ANSWER_BYTES:
            raise SiteUnreachable(f"{where} answered more than {MAX_ANSWER_BYTES} bytes")
        if raw:
            return body
        if not body:
            return {}
        try:
            return json.loads(body)
        except ValueError:
            raise SiteUnreachable(f"{where} answered something that is not JSON") from None


def _message(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read(4096)).get("error", error.reason)
    except (ValueError, AttributeError, OSError):
        return str(error.reason)
