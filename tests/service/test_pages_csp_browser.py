"""The pages under their Content-Security-Policy in a real browser (Debian's chromium through Playwright, as
test_playground_browser.py): the playground, Swagger UI at /docs and ReDoc at /redoc render and work, and the
browser reports no CSP violation (a policy that blocked a script, style, image or worker the page needs would
show up here); a page of another site cannot frame them."""

from __future__ import annotations

import pytest

from svc_helpers import REPO, served
from test_playground_browser import CHROMIUM, _browser_or_skip

# every violation the page reports (the securitypolicyviolation event), collected before any page script runs
WATCH = """window.__csp = [];
document.addEventListener('securitypolicyviolation',
    (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sourceFile || '')));"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    _browser_or_skip()
    with served(tmp_path_factory.mktemp("csp"), [REPO / "models" / "mnist"]) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _own_blocked(page, srv, errors) -> list[str]:
    """Violations of what the page itself needs: anything but another host's URL, which the policy is meant to
    block (ReDoc's sidebar logo from cdn.redoc.ly: the page works offline without it)."""
    own = [v for v in page.evaluate("window.__csp") if not (v.split(" ")[1].startswith(("http://", "https://"))
                                                            and not v.split(" ")[1].startswith(srv.url))]
    return own + [e for e in errors if "Content Security Policy" not in e or "cdn.redoc.ly" not in e]


def _page(browser, srv):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(WATCH)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith((srv.url, "data:", "blob:"))
               else route.abort())
    return page, errors


def test_playground_works_under_its_policy(browser, srv):
    from playwright.sync_api import expect

    page, errors = _page(browser, srv)
    page.goto(srv.url + "/")
    expect(page.locator("#gen-grid img")).to_have_count(36)
    # the priors' mini bars get their heights from style values (set through CSSOM, which the policy allows)
    heights = page.locator(".minibars span").evaluate_all("(s) => s.map((e) => e.getBoundingClientRect().height)")
    assert heights and max(heights) > 5, heights
    assert not _own_blocked(page, srv, errors), _own_blocked(page, srv, errors)
    page.close()


def test_swagger_ui_works_under_its_policy(browser, srv):
    from playwright.sync_api import expect

    page, errors = _page(browser, srv)
    page.goto(srv.url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("nemgan")
    op = page.locator(".opblock-summary-path", has_text="/v2/health/live").first
    op.click()
    page.locator(".try-out__btn").first.click()
    page.locator(".execute").first.click()
    expect(page.locator(".live-responses-table tbody .response-col_status").first).to_contain_text("200")
    assert not _own_blocked(page, srv, errors), _own_blocked(page, srv, errors)
    page.close()


def test_redoc_works_under_its_policy(browser, srv):
    from playwright.sync_api import expect

    page, errors = _page(browser, srv)
    page.goto(srv.url + "/redoc")
    expect(page.locator("h1").first).to_contain_text("nemgan")
    page.locator("input[placeholder='Search...']").fill("cluster")  # the search runs in a blob: worker
    expect(page.locator("[data-role='search:results'] li, .search-results li, [role='search'] ~ div li")
           .first).to_be_visible()
    assert not _own_blocked(page, srv, errors), _own_blocked(page, srv, errors)
    page.close()


def test_pages_cannot_be_framed_by_another_site(browser, srv):
    page, _ = _page(browser, srv)
    for path in ("/", "/docs"):
        # a page of another origin framing ours; set_content returns after the load event, which waits for the
        # frame: loaded or refused by frame-ancestors, it is settled by then
        page.set_content(f'<iframe id="f" src="{srv.url}{path}" width="400" height="300"></iframe>')
        child = page.frames[1]
        assert not child.url.startswith(srv.url) or child.locator("body *").count() == 0, (path, child.url)
    page.close()
