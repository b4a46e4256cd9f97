"""The service's front door, in front of everything (the hot-path handlers included, see app.NemganApp):

* **Origin check while auth is off.** With no `NEMGAN_API_KEY`, anyone who can reach the port may call the
  state-changing endpoints, and so may any web page a user of that machine opens: a browser sends a
  cross-site form POST (or a `fetch` with `mode: "no-cors"`) without asking anyone. So, with no key, a
  POST/PUT/PATCH/DELETE whose `Origin` (or, without one, `Referer`) names another site than the service's own
  (its `Host` header, port included) is refused with 403. Clients that are not browsers (curl, httpx,
  tritonclient) send no Origin and are not affected; neither is the playground, served from the service
  itself. `NEMGAN_ALLOWED_ORIGINS` lists further origins to accept (a page on another host that is meant to
  call this service, or the public name when a proxy rewrites Host). With a key set, browsers cannot attach
  it cross-site (no CORS is served), so the check is off.
* **Security headers.** `X-Content-Type-Options: nosniff` on every response; on the HTML pages (/, the
  playground's files, /docs, /redoc) a Content-Security-Policy with `frame-ancestors 'none'` (and
  `X-Frame-Options: DENY` for old browsers). The playground's policy allows only its own script, style,
  API calls and the images it makes (data:/blob:); /docs and /redoc set their own (routes/docs.py: the
  inline Swagger script by hash, the inline styles and blob: worker the bundles need).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .errors import error_response

UNSAFE = frozenset(("POST", "PUT", "PATCH", "DELETE"))
NOSNIFF = (b"x-content-type-options", b"nosniff")
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_CSP_HEADER = (b"content-security-policy", PAGE_CSP.encode())
FRAME_DENY = (b"x-frame-options", b"DENY")
PAGE_PATHS = ("/", "/docs", "/redoc")
PAGE_PREFIXES = ("/playground/", "/docs/")
_DEFAULT_PORT = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _host_port(netloc: str, scheme: str | None) -> str:
    """'Example.com' / 'example.com:80' -> 'example.com:80' (lower case, the scheme's default port filled in)."""
    netloc = netloc.strip().lower().rpartition("@")[2]
    if netloc.startswith("["):  # IPv6 literal
        host, _, rest = netloc.partition("]")
        host, port = host + "]", rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = netloc.partition(":")
    return f"{host}:{port or _DEFAULT_PORT.get(scheme or 'http', '')}"


def _origin_of(value: str) -> tuple[str, str] | None:
    """'https://a.example:8443/path' -> ('https', 'a.example:8443'); None for 'null' or anything unparsable."""
    try:
        u = urlsplit(value.strip())
    except ValueError:
        return None
    if not u.scheme or not u.netloc:
        return None
    return u.scheme.lower(), u.netloc


class Front:
    """Origin check (when auth is off) and security headers; one instance per app."""

    def __init__(self, settings):
        self.check_origin = not settings.api_key
        self.allowed: set[str] = set()
        for o in settings.allowed_origins:
            parsed = _origin_of(o)
            if parsed is None:
                raise ValueError(f"NEMGAN_ALLOWED_ORIGINS: {o!r} is not an origin like https://host[:port]")
            self.allowed.add(f"{parsed[0]}://{_host_port(parsed[1], parsed[0])}")

    # ------------------------------------------------------------------ origin
    def refusal(self, scope):
        """None when the request may go on, else the 403 response (an ASGI app)."""
        if not self.check_origin or scope["method"] not in UNSAFE:
            return None
        h = dict(scope["headers"])  # one C call; the names are lower-case (ASGI)
        origin = h.get(b"origin")
        if origin is None:
            origin = h.get(b"referer")
            if origin is None:
                if h.get(b"sec-fetch-site") == b"cross-site":
                    return self._refuse("a cross-site request (Sec-Fetch-Site: cross-site) without Origin")
                return None  # not a browser (curl, SDKs): nothing to check
            what = "Referer"
        else:
            what = "Origin"
        host = h.get(b"host")
        if host is not None and what == "Origin" and (origin == b"http://" + host or origin == b"https://" + host):
            return None  # the usual same-origin request, without parsing
        return self._check(origin.decode("latin-1"), None if host is None else host.decode("latin-1"), what)

    def _check(self, claimed: str, host: str | None, what: str):
        parsed = _origin_of(claimed)
        if parsed is None:
            return self._refuse(f"{what} {claimed[:200]!r} is not this service")
        scheme, netloc = parsed
        here = _host_port(netloc, scheme)
        if host is not None and here == _host_port(host, scheme):
            return None
        if f"{scheme}://{here}" in self.allowed:
            return None
        return self._refuse(f"{what} {scheme}://{netloc} is not this service ({host or 'no Host header'})")

    @staticmethod
    def _refuse(why: str):
        from . import metrics as M

        M.REJECTED.labels("cross_origin").inc()
        return error_response(403, "cross-origin request refused",
                              f"{why}. With no API key set (NEMGAN_API_KEY), state-changing requests from other "
                              "sites are refused; list an origin to accept in NEMGAN_ALLOWED_ORIGINS, or set a key.")

    # ------------------------------------------------------------------ headers
    def wrap_send(self, scope, send):
        """`send` with the security headers added to the response start."""
        path = scope["path"]
        page = path in PAGE_PATHS or path.startswith(PAGE_PREFIXES)

        if page:
            async def secured(msg):
                if msg["type"] == "http.response.start":
                    headers = [*msg.get("headers", ()), NOSNIFF, FRAME_DENY]
                    if not any(k.lower() == b"content-security-policy" for k, _ in headers):
                        headers.append(PAGE_CSP_HEADER)
                    msg["headers"] = headers  # a new list: the response's own is left as it was
                await send(msg)
        else:
            async def secured(msg):
                if msg["type"] == "http.response.start":
                    msg["headers"] = [*msg.get("headers", ()), NOSNIFF]
                await send(msg)

        return secured
