"""The admin's styling, served by the web server as deployed (gunicorn, uvicorn
workers, DEBUG off): collectstatic's hashed names from the manifest, compressed
variants, cached for good. Was: /static/admin/css/base.css a 404, a bare page."""
import re

import pytest

from tests import harness

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def web(router_template):
    router = harness.Router(router_template)
    router.start_web(workers=1)
    yield router
    router.stop()


def _stylesheet(web) -> str:
    page = web.session.get(f"{web.url}/admin/login/", timeout=10)
    assert page.status_code == 200
    found = re.search(r'<link rel="stylesheet" href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page.text)
    assert found, page.text[:2000]
    return found.group(1)


def test_admin_stylesheet_is_linked_by_its_hashed_name_and_served_as_css_cached_for_a_year(web):
    path = _stylesheet(web)
    r = web.session.get(f"{web.url}{path}", headers={"Accept-Encoding": "identity"}, timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/css")
    assert "max-age=315360000" in r.headers["Cache-Control"] and "immutable" in r.headers["Cache-Control"]
    assert "Content-Encoding" not in r.headers
    assert "--body-bg" in r.text  # the admin's own stylesheet, not an error page


@pytest.mark.parametrize("encoding", ["br", "gzip"])
def test_admin_stylesheet_comes_compressed_when_the_browser_asks(web, encoding):
    path = _stylesheet(web)
    r = web.session.get(f"{web.url}{path}", headers={"Accept-Encoding": encoding}, timeout=10, stream=True)
    assert r.status_code == 200
    assert r.headers["Content-Encoding"] == encoding
    assert "Accept-Encoding" in r.headers["Vary"]
    plain = web.session.get(f"{web.url}{path}", headers={"Accept-Encoding": "identity"}, timeout=10)
    assert int(r.headers["Content-Length"]) < int(plain.headers["Content-Length"]) / 2
    r.close()


def test_unhashed_name_is_served_too_but_cached_only_briefly(web):
    r = web.session.get(f"{web.url}/static/admin/css/base.css", headers={"Accept-Encoding": "identity"}, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/css")
    assert "immutable" not in r.headers.get("Cache-Control", "")


def test_admin_icons_are_served_as_svg(web):
    """Were black squares: the admin's icons are files under /static/ too."""
    r = web.session.get(f"{web.url}/static/admin/img/icon-yes.svg", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("image/svg+xml")


def test_every_deployment_collects_the_static_files_before_serving():
    """The Dockerfile at build (compose runs that image), the systemd web unit
    before each start, the demo before its web processes."""
    root = harness.ROOT
    dockerfile = (root / "Dockerfile").read_text()
    assert dockerfile.index("RUN python manage.py collectstatic --noinput") < dockerfile.index("\nCMD ")
    unit = (root / "deploy" / "systemd" / "meridian-region-web@.service").read_text()
    assert re.search(r"^ExecStartPre=\S+python manage\.py collectstatic --noinput", unit, re.M)
    demo = (root / "regions" / "management" / "demo" / "fleet.py").read_text()
    assert demo.index('"collectstatic", "--noinput"') < demo.index('self._start("router-web"')


def test_console_files_are_linked_by_hashed_names_and_served_with_their_types(web):
    """The favicon, the console's stylesheet and scripts (console/static/console/)
    go through the same collectstatic and WhiteNoise as the admin's own."""
    page = web.session.get(f"{web.url}/admin/login/", timeout=10).text
    for name, ext, kind in (("favicon", "svg", "image/svg+xml"), ("console", "css", "text/css"),
                            ("a11y", "js", "text/javascript")):
        found = re.search(rf'(/static/console/{name}\.[0-9a-f]{{12}}\.{ext})"', page)
        assert found, (name, page[:3000])
        r = web.session.get(f"{web.url}{found.group(1)}", timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(kind), (name, r.headers)
    r = web.session.get(f"{web.url}/static/console/live.js", timeout=10)
    assert r.status_code == 200 and "DOMParser" in r.text
