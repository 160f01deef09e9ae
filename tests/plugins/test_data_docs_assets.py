"""The data docs' third-party assets (operators/links/data_docs_assets.py): every resource URL of
GX's templates is known, rewriting leaves navigation links alone, the installer checks the
registry's integrity before unpacking, and what make setup installed holds every mapped file."""
import base64
import hashlib
import io
import re
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from operators.links import data_docs_assets as assets

GX_TEMPLATES = Path(assets.gx_static_dir()).parent / "templates"
# a resource the browser loads: <link href>, <script src>, <img src>, CSS url(...)
RESOURCE = re.compile(r"""(?:<link[^>]*href|<script[^>]*src|<img[^>]*src)\s*=\s*["'](https://[^"']+)|url\(['"]?(https://[^'")]+)""",
                      re.S)


def gx_resource_urls() -> set[str]:
    found = set()
    for path in list(GX_TEMPLATES.rglob("*")) + list(assets.gx_static_dir().rglob("*.css")):
        if path.is_file():
            for m in RESOURCE.finditer(path.read_text(errors="replace")):
                found.add(m.group(1) or m.group(2))
    return found


@pytest.mark.unit
def test_every_resource_url_in_gx_templates_is_served_locally():
    urls = gx_resource_urls()
    assert len(urls) >= 12, urls           # bootstrap, jquery, popper, table, datepicker, fa, vega x3, logos
    unknown = sorted(u for u in urls if assets.local_path(u) is None)
    assert unknown == [], f"GX loads these from the internet; add them to CDN_URLS: {unknown}"


@pytest.mark.unit
def test_rewrite_points_cdn_urls_at_the_route_and_leaves_links_alone():
    page = ('<link href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css" rel="stylesheet">'
            '<script src="https://cdn.jsdelivr.net/npm/vega-lite@5"></script>'
            '<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=2026">'
            '<a href="https://greatexpectations.io/">GX</a>'
            "<style>a { background: url('https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
            "full_logo_dark.png') }</style>")
    out = assets.rewrite(page, "/criteo-data-docs/assets/")
    assert '"/criteo-data-docs/assets/bootstrap@4.3.1/dist/css/bootstrap.min.css"' in out
    assert '"/criteo-data-docs/assets/vega-lite@5.23.0/build/vega-lite.min.js"' in out
    assert '"/criteo-data-docs/assets/gx/images/logo-long.png"' in out
    assert "url('/criteo-data-docs/assets/gx/images/logo-long.png')" in out
    assert '<a href="https://greatexpectations.io/">' in out            # navigation, not a request
    one_nine_zero = "https://unpkg.com/bootstrap-table@1.19.0/dist/x.css"
    assert assets.local_path(one_nine_zero) == "bootstrap-table@1.19.1/dist/x.css"
    assert assets.local_path("https://cdn.jsdelivr.net/npm/vega@5.1") is None


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A local npm-like registry over real HTTP: {root}/{name}/-/{name}-{version}.tgz."""
    root = tmp_path / "registry"
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(assets, "REGISTRY", f"http://127.0.0.1:{server.server_port}")
    yield root
    server.shutdown()


def _publish(root: Path, name: str, version: str, data: bytes) -> str:
    path = root / name / "-" / f"{name.rsplit('/', 1)[-1]}-{version}.tgz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.mark.unit
def test_install_checks_integrity_and_unpacks_only_the_served_folders(registry, tmp_path):
    data = _tarball({"package/dist/a.css": b"body{}", "package/src/big.js": b"x", "package/package.json": b"{}"})
    integrity = _publish(registry, "@scope/lib", "1.0.0", data)
    pkg = assets.Package("@scope/lib", "1.0.0", keep=("dist",), integrity=integrity)
    dest = assets.install_package(pkg, tmp_path / "out")
    assert dest == tmp_path / "out" / "@scope" / "lib@1.0.0"
    assert (dest / "dist" / "a.css").read_bytes() == b"body{}" and not (dest / "src").exists()
    assert assets.resolve("@scope/lib@1.0.0/dist/a.css", tmp_path / "out") == (dest / "dist" / "a.css").resolve()
    with pytest.raises(FileNotFoundError):
        assets.resolve("@scope/lib@1.0.0/package.json", tmp_path / "out")


@pytest.mark.unit
def test_a_tampered_tarball_installs_nothing(registry, tmp_path):
    _publish(registry, "lib", "2.0.0", _tarball({"package/dist/a.js": b"evil()"}))
    wrong = "sha512-" + base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    pkg = assets.Package("lib", "2.0.0", keep=("dist",), integrity=wrong)
    with pytest.raises(ValueError, match=r"lib-2.0.0.tgz: sha512 integrity mismatch.*nothing was installed"):
        assets.install_package(pkg, tmp_path / "out")
    assert not (tmp_path / "out" / "lib@2.0.0").exists()
    assert assets.missing(tmp_path / "out") == [p.folder for p in assets.PACKAGES]


@pytest.mark.integration
def test_make_setup_installed_every_mapped_file():
    """Against the packages make setup installed from the npm registry (the locked integrities)."""
    assert assets.missing() == [], "run make setup"
    for url in sorted(gx_resource_urls()):
        path = assets.local_path(url)
        assert assets.resolve(path).stat().st_size > 100, (url, path)
    fa = assets.resolve("@fortawesome/fontawesome-free@6.6.0/css/all.min.css").read_text()
    for font in set(re.findall(r"url\(\.\./(webfonts/[^)]+)\)", fa)):       # what the CSS loads next
        assert assets.resolve(f"@fortawesome/fontawesome-free@6.6.0/{font}").is_file(), font
