"""Signing in and out, sessions, CSRF, security headers, roles and the set-up link."""

from __future__ import annotations

import html
import http.client
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlencode, urljoin, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from device.errors import UserExists, WeakPassword
from device.web.auth import (
    add_user,
    admin_exists,
    create_setup_token,
    same_site_path,
    set_password,
    verify_password,
)
from device.web.security import CSP, SlidingWindowLimiter
from device.web.server import WebServer
from device.web.users import password_matches
from tests.web_support import (
    PASSWORD,
    audit_actions,
    csrf_from,
    post,
    relay_on,
    sign_in,
)

TEMPLATES = Path(__file__).parents[1] / "device" / "web" / "templates"
PAGES = ["/", "/people", "/people/new", "/people/some-id", "/people/some-id/capture",
         "/people/some-id/delete", "/log", "/log.csv", "/settings", "/audit", "/live.jpg",
         "/snapshots/some-id/face", "/templates/some-id/crop.jpg", "/account", "/accounts",
         "/accounts/some-id", "/no-such-page"]


# --- Signed out ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", PAGES)
def test_every_page_sends_a_signed_out_visitor_to_the_sign_in_page(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response.location.startswith("/login")


@pytest.mark.parametrize("url", ["/login", "/health", "/static/app.css", "/static/app.js"])
def test_only_the_sign_in_page_health_and_static_files_are_public(client, url):
    with client.get(url) as response:
        assert response.status_code == 200


def test_health_answers_ok_in_json(client):
    assert client.get("/health").get_json() == {"status": "ok"}


def test_a_signed_out_post_changes_nothing(client, pin_factory):
    token = csrf_from(client, "/login")
    response = client.post("/unlock", data={"csrf_token": token})
    assert response.status_code == 302 and response.location.startswith("/login")
    assert not relay_on(pin_factory)


# --- Signing in --------------------------------------------------------------------------------


def test_the_right_password_signs_in_to_the_dashboard_and_is_audited(app, client):
    add_user(app.config["DATABASE"], "ann", PASSWORD)
    response = sign_in(client, "ann", PASSWORD)
    assert response.status_code == 302 and response.location == "/"
    page = client.get("/").get_data(as_text=True)
    assert 'id="door-state"' in page and 'id="nav-logout"' in page
    assert audit_actions(app.config["DATABASE"]) == ["sign_in"]


@pytest.mark.parametrize("name", ["ann", "nobody"])
def test_a_wrong_name_or_password_gets_one_message_and_an_audit_row(app, client, name):
    add_user(app.config["DATABASE"], "ann", PASSWORD)
    response = sign_in(client, name, "wrong password")
    page = response.get_data(as_text=True)
    assert response.status_code == 401
    assert '<p class="flash error" role="alert">Wrong name or password.</p>' in page
    assert audit_actions(app.config["DATABASE"]) == ["sign_in_failed"]
    assert client.get("/").status_code == 302


def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(app, client):
    add_user(app.config["DATABASE"], "ann", PASSWORD)
    login = client.get("/log")
    assert login.location == "/login?next=/log"
    token = csrf_from(client, "/login?next=/log")
    response = client.post("/login", data={"username": "ann", "password": PASSWORD,
                                           "next": "/log", "csrf_token": token})
    assert response.location == "/log"
    client.post("/logout", data={"csrf_token": csrf_from(client, "/")})
    token = csrf_from(client, "/login")
    response = client.post("/login", data={"username": "ann", "password": PASSWORD,
                                           "next": "//evil.example/", "csrf_token": token})
    assert response.location == "/"


# Where a browser goes for a Location header: what it drops and what it takes for a slash
# (the WHATWG URL standard), then urljoin's resolution against the page that redirected.
SITE = "http://door.local/login"
_IGNORED_AROUND = "".join(map(chr, range(0x21)))


def browser_target(location: str) -> str:
    cleaned = re.sub(r"[\t\n\r]", "", location.strip(_IGNORED_AROUND)).replace("\\", "/")
    return urljoin(SITE, cleaned)


def on_this_site(location: str) -> bool:
    target = urlsplit(browser_target(location))
    return (target.scheme, target.netloc) == ("http", "door.local")


_TRICKS = "/\\\t\n\r :.@%?#\x00\x1f\x7fevil.example"
NEXTS = st.one_of(
    st.text(),
    st.text(alphabet=_TRICKS, max_size=24),
    st.builds(str.__add__, st.sampled_from(["/", "//", "/\\", "\\/", " /", "/\t/", "\t//",
                                            "/\n/", "http:", "https://", "javascript:"]),
              st.text(alphabet=_TRICKS, max_size=24)),
)


@pytest.mark.parametrize("target", [
    "/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "\t//evil.example",
    " //evil.example", "/\\evil.example", "\\\\evil.example", "\\/evil.example",
    "//evil.example", "https://evil.example/", "https:evil.example", "javascript:alert(1)",
    "evil.example", "/\x00/evil.example", "", None,
])
def test_a_next_that_a_browser_would_follow_off_site_is_refused(target):
    assert same_site_path(target) is None


@pytest.mark.parametrize(("target", "path"), [
    ("/log", "/log"), ("/log?since=2h&kind=granted", "/log?since=2h&kind=granted"),
    ("/people/a-b#photos", "/people/a-b#photos"), ("/%2F/evil.example", "/%2F/evil.example"),
    ("/lo\tg", "/log"),  # what the browser would have asked for
])
def test_a_next_on_this_site_is_kept_as_a_browser_reads_it(target, path):
    assert same_site_path(target) == path


@settings(max_examples=2000, deadline=None)
@given(target=NEXTS)
def test_whatever_next_says_the_path_kept_is_on_this_site(target):
    path = same_site_path(target)
    assert path is None or (path.startswith("/") and on_this_site(path))


def test_a_tab_in_next_does_not_send_the_signed_in_admin_off_site(app, client):
    add_user(app.config["DATABASE"], "ann", PASSWORD)
    page = client.get("/login?next=/%09/evil.example").get_data(as_text=True)
    kept = re.search(r'name="next" value="([^"]*)"', page)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    form = {"username": "ann", "password": PASSWORD, "csrf_token": token,
            **({"next": html.unescape(kept[1])} if kept else {})}
    response = client.post("/login", data=form)
    assert response.status_code == 302 and response.location == "/"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=NEXTS)
@example(target="/\t/evil.example")
@example(target="/\\/evil.example")
def test_signing_in_always_redirects_to_a_path_on_this_site(app, target):
    # The app is the same for every example, so the account may exist already.
    if verify_password(app.config["DATABASE"], "ann", PASSWORD) is None:
        add_user(app.config["DATABASE"], "ann", PASSWORD)
    client = app.test_client()
    client.get("/login?next=" + quote(target, safe=""))
    response = client.post("/login", data={"username": "ann", "password": PASSWORD,
                                           "next": target,
                                           "csrf_token": csrf_from(client, "/login")})
    assert response.status_code == 302
    assert on_this_site(response.headers["Location"])


def test_failed_sign_ins_are_throttled_per_address_and_per_name(make_app):
    app = make_app(LOGIN_RATE_LIMIT=3)
    database = app.config["DATABASE"]
    add_user(database, "ann", PASSWORD)
    add_user(database, "bob", PASSWORD)
    attacker = app.test_client()
    for _ in range(3):
        assert sign_in(attacker, "ann", "guess").status_code == 401
    # The right password no longer helps from that address, for any name ...
    throttled = sign_in(attacker, "ann", PASSWORD)
    assert throttled.status_code == 429
    assert "Too many failed sign-ins" in throttled.get_data(as_text=True)
    assert sign_in(attacker, "bob", PASSWORD).status_code == 429
    # ... nor for that name from another address; another name elsewhere is fine.
    elsewhere = app.test_client()
    other = {"environ_base": {"REMOTE_ADDR": "192.0.2.7"}}
    assert sign_in(elsewhere, "ann", PASSWORD, **other).status_code == 429
    assert sign_in(elsewhere, "bob", PASSWORD, **other).status_code == 302
    assert audit_actions(database).count("sign_in_throttled") == 3


def test_the_limiter_forgets_failures_once_the_window_has_passed():
    now = [0.0]
    limiter = SlidingWindowLimiter(2, 60, clock=lambda: now[0])
    limiter.hit("a")
    limiter.hit("a")
    assert limiter.blocked("a") and not limiter.blocked("b")
    now[0] = 60.5
    assert not limiter.blocked("a")


def test_of_many_parallel_attempts_at_most_the_limit_are_counted_in():
    limiter = SlidingWindowLimiter(5, 60)
    start = threading.Barrier(40)

    def attempt(_: int) -> bool:
        start.wait()
        return limiter.acquire("address", "name")

    with ThreadPoolExecutor(40) as pool:
        assert sum(pool.map(attempt, range(40))) == 5
    limiter.release("address")
    assert limiter.acquire("address") and not limiter.acquire("name")


@pytest.mark.parametrize("parallel", [40, 80])
def test_parallel_wrong_passwords_get_no_more_checks_than_the_limit(make_app, parallel):
    """Through waitress, as the daemon serves it: every guess at once, from one browser."""
    app = make_app(LOGIN_RATE_LIMIT=5)
    database = app.config["DATABASE"]
    add_user(database, "ann", PASSWORD)
    server = WebServer(app, "127.0.0.1", 0, threads=8)
    try:
        status, headers, page = _http(server.port, "GET", "/login")
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
        body = urlencode({"username": "ann", "password": "wrong guess", "csrf_token": token})
        start = threading.Barrier(parallel)

        def guess(_: int) -> int:
            start.wait()
            return _http(server.port, "POST", "/login", body, {
                "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})[0]

        with ThreadPoolExecutor(parallel) as pool:
            statuses = list(pool.map(guess, range(parallel)))
    finally:
        server.close()
    assert statuses.count(401) == 5 and statuses.count(429) == parallel - 5
    actions = audit_actions(database)
    assert actions.count("sign_in_failed") == 5  # one per password checked
    assert actions.count("sign_in_throttled") == parallel - 5


def _http(port: int, method: str, path: str, body: str | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def test_signing_out_ends_the_session_and_is_audited(app, admin):
    response = post(admin, "/logout")
    assert response.status_code == 302 and response.location == "/login"
    assert admin.get("/").status_code == 302
    assert audit_actions(app.config["DATABASE"])[-1] == "sign_out"


def test_a_session_idle_too_long_is_signed_out(admin):
    with admin.session_transaction() as session:
        session["seen"] = time.time() - 31 * 60
    response = admin.get("/people")
    assert response.status_code == 302 and response.location.startswith("/login")
    page = admin.get(response.location).get_data(as_text=True)
    assert "signed out after 30 minutes without activity" in page


def test_the_live_view_polling_does_not_keep_a_session_alive(admin):
    with admin.session_transaction() as session:
        session["seen"] = seen = time.time() - 60
    assert admin.get("/live.jpg").status_code == 200
    with admin.session_transaction() as session:
        assert session["seen"] == seen
    admin.get("/")
    with admin.session_transaction() as session:
        assert session["seen"] > seen


def test_a_new_password_signs_out_the_accounts_open_sessions(app, admin):
    set_password(app.config["DATABASE"], "ann", "another password")
    assert admin.get("/").status_code == 302


def test_the_session_cookie_is_httponly_and_samesite_lax(app, client):
    add_user(app.config["DATABASE"], "ann", PASSWORD)
    response = sign_in(client, "ann", PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


# --- CSRF ------------------------------------------------------------------------------------


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(app, admin):
    response = admin.post("/people/new", data={"name": "Mallory"})
    assert response.status_code == 400
    assert "This form has expired; reload the page and try again." in response.get_data(
        as_text=True)
    assert "Mallory" not in admin.get("/people").get_data(as_text=True)


def test_a_stale_csrf_token_is_refused(app, admin, pin_factory):
    stale = csrf_from(admin, "/")
    post(admin, "/logout")
    sign_in(admin, "ann", PASSWORD)
    response = admin.post("/unlock", data={"csrf_token": stale})
    assert response.status_code == 400
    assert not relay_on(pin_factory)
    assert "unlock" not in audit_actions(app.config["DATABASE"])


def test_the_sign_in_form_needs_its_csrf_token_too(app, client):
    add_user(app.config["DATABASE"], "ann", PASSWORD)
    response = client.post("/login", data={"username": "ann", "password": PASSWORD})
    assert response.status_code == 400


# --- Headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/", "/people", "/login", "/static/app.css", "/nothing-here"])
def test_every_response_carries_the_security_headers(admin, url):
    with admin.get(url) as response:
        headers = response.headers
    assert headers["Content-Security-Policy"] == CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"


def test_pages_are_not_cached_but_static_files_may_be(admin):
    assert admin.get("/people").headers["Cache-Control"] == "no-store"
    assert admin.get("/log").headers["Cache-Control"] == "no-store"
    with admin.get("/static/app.js") as response:
        assert "no-store" not in response.headers.get("Cache-Control", "")


def test_no_template_has_inline_script_or_style():
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert "<style" not in text and " style=" not in text, template.name
        assert not re.search(r"\son[a-z]+=", text), template.name  # onclick= and the like
        assert "http://" not in text and "https://" not in text, template.name  # no CDN


# --- Roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/people", "/people/new", "/settings", "/audit",
                                 "/accounts"])
def test_a_viewer_may_not_open_the_admin_pages(viewer, url):
    assert viewer.get(url).status_code == 403


def test_a_viewer_sees_the_dashboard_and_the_log_without_admin_controls(viewer):
    page = viewer.get("/").get_data(as_text=True)
    assert 'id="door-state"' in page
    assert 'id="unlock-now"' not in page and 'id="nav-people"' not in page
    assert viewer.get("/log").status_code == 200


def test_a_viewer_cannot_unlock_the_door(viewer, pin_factory):
    response = post(viewer, "/unlock")
    assert response.status_code == 403
    assert not relay_on(pin_factory)


def test_a_viewer_cannot_add_a_person(app, viewer):
    response = post(viewer, "/people/new", {"name": "Mallory"})
    assert response.status_code == 403


# --- Accounts and the set-up link --------------------------------------------------------------


def test_passwords_are_stored_as_salted_scrypt_never_as_given(app):
    database = app.config["DATABASE"]
    add_user(database, "ann", PASSWORD)
    add_user(database, "bob", PASSWORD)
    from device.gallery.store import Gallery

    with Gallery(database) as gallery:
        hashes = [row[0] for row in gallery.db.execute("SELECT password_hash FROM users")]
    for encoded in hashes:
        scheme, n, r, p, salt, digest = encoded.split("$")
        assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
        assert PASSWORD not in encoded
        assert password_matches(encoded, PASSWORD)
        assert not password_matches(encoded, PASSWORD + "!")
    assert hashes[0] != hashes[1]  # salted
    assert verify_password(database, "ann", PASSWORD).name == "ann"
    assert verify_password(database, "ann", "nope") is None


def test_accounts_refuse_short_passwords_and_taken_names(app):
    database = app.config["DATABASE"]
    with pytest.raises(WeakPassword):
        add_user(database, "ann", "short")
    add_user(database, "ann", PASSWORD)
    with pytest.raises(UserExists):
        add_user(database, "ann", PASSWORD)


def test_the_setup_link_creates_the_first_admin_once_and_then_is_dead(app, client):
    database = app.config["DATABASE"]
    assert not admin_exists(database)
    token = create_setup_token(database)
    page = client.get(f"/setup/{token}")
    assert page.status_code == 200 and 'id="setup"' in page.get_data(as_text=True)
    form = {"username": "ann", "password": PASSWORD, "password2": PASSWORD,
            "csrf_token": csrf_from(client, f"/setup/{token}")}
    response = client.post(f"/setup/{token}", data=form)
    assert response.status_code == 302 and response.location == "/"
    assert client.get("/people").status_code == 200  # signed in, as an admin
    assert admin_exists(database)
    assert audit_actions(database) == ["first_admin"]
    assert app.test_client().get(f"/setup/{token}").status_code == 404
    # A second link made meanwhile is dead too: there is an admin now.
    assert app.test_client().get(f"/setup/{create_setup_token(database)}").status_code == 404


def test_the_setup_link_refuses_mismatched_passwords_and_stays_usable(app, client):
    token = create_setup_token(app.config["DATABASE"])
    form = {"username": "ann", "password": PASSWORD, "password2": "different",
            "csrf_token": csrf_from(client, f"/setup/{token}")}
    response = client.post(f"/setup/{token}", data=form)
    assert response.status_code == 400
    assert "The two passwords differ." in response.get_data(as_text=True)
    assert not admin_exists(app.config["DATABASE"])
    assert client.get(f"/setup/{token}").status_code == 200


def test_an_unknown_setup_link_is_not_found(client):
    assert client.get("/setup/" + "x" * 43).status_code == 404


def test_an_expired_setup_link_is_dead(app, client):
    database = app.config["DATABASE"]
    token = create_setup_token(database)
    from device.gallery.store import Gallery

    with Gallery(database) as gallery:
        gallery.db.execute("UPDATE setup_tokens SET created_at = '2000-01-01T00:00:00.000Z'")
        gallery.db.conn.commit()
    assert client.get(f"/setup/{token}").status_code == 404


def test_create_app_needs_a_secret_key_outside_testing(db_path):
    from device.web import create_app

    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app({"DATABASE": db_path})
    assert create_app({"DATABASE": db_path, "SECRET_KEY": "s"}).extensions["facegate"]
