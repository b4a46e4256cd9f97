"""Offline pages: /docs, /redoc and the playground at / reference only assets the service itself serves (no
CDN), and every one of those assets answers 200 with content."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.urls.append(v)


def _asset_urls(html: str) -> list[str]:
    p = _Links()
    p.feed(html)
    return p.urls


@pytest.mark.parametrize("page,needs", [
    ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")),
    ("/redoc", ("redoc.standalone.js",)),
    ("/", ("/playground/app.js", "/playground/style.css")),
])
def test_page_uses_only_local_assets(client, page, needs):
    r = client.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    # nothing is loaded from another host: no absolute URL at all (links to docs sites would be fine, but
    # the pages have none, so the strict check keeps it that way)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html), html
    assert "fonts.googleapis" not in html and "cdn." not in html
    urls = _asset_urls(html)
    for n in needs:
        assert any(u.endswith(n) for u in urls), (n, urls)
    for u in urls:
        if u.startswith(("#", "data:")):  # in-page anchors and inline data need no request
            continue
        assert u.startswith("/"), u
        a = client.get(u)
        assert a.status_code == 200, (u, a.status_code)
        assert len(a.content) > 0


def test_docs_openapi_and_oauth_redirect_are_served(client):
    html = client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert client.get("/openapi.json").json()["info"]["title"] == "nemgan"
    assert client.get("/docs/oauth2-redirect").status_code == 200


def test_assets_have_real_content_types(client):
    assert client.get("/docs-assets/swagger-ui-bundle.js").headers["content-type"].split(";")[0] in (
        "text/javascript", "application/javascript")
    assert client.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert client.get("/playground/app.js").headers["content-type"].split(";")[0] in (
        "text/javascript", "application/javascript")
    assert client.get("/playground/nope.js").status_code == 404


def test_pages_are_not_in_the_openapi_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc", "/docs/oauth2-redirect"} & set(paths)
