"""The data docs' third-party assets, served by the plugin so that the pages render with no
request leaving the machine.

Great Expectations 1.x pages load bootstrap, jQuery, popper, bootstrap-table, bootstrap-datepicker,
Font Awesome and vega from public CDNs, and its logo from S3. Many production clusters have no
internet, and where they do, the user's browser should not call third parties to read internal
data-quality results. So:

- `make setup` installs the exact npm packages the pages ask for (PACKAGES: version and the
  registry's sha512 integrity, checked before anything is unpacked) into `assets_dir()`. The
  Airflow image does the same at build time (images/airflow/Dockerfile).
- The plugin serves them at `{api root}/criteo-data-docs/assets/...`, and GX's own styles and
  logo from the installed great_expectations package at `.../assets/gx/...`.
- `rewrite()` points each CDN URL of a served page or stylesheet at those routes (CDN_URLS). The
  plugin's Content-Security-Policy allows 'self' only, so a URL that a future GX adds and this
  table misses is blocked, and the browser test reports it, instead of leaking.

`python -m operators.links.data_docs_assets install [--dest DIR]` installs; `check` says what is
missing. Cheap to import (the plugin imports it in the API server): standard library and the settings registry only.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..pipeline.config import REPO_ROOT

REGISTRY = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")
ASSETS_ROUTE = "assets"          # {ROUTE_PREFIX}/assets/{package}@{version}/{path}
GX_ASSETS = "gx"                 # {ROUTE_PREFIX}/assets/gx/{path under great_expectations' static/}
MARKER = ".installed"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    keep: tuple[str, ...]     # folders of the package served (the rest of the tarball is not unpacked)
    integrity: str            # the registry's dist.integrity (sha512, base64)

    @property
    def folder(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"


# Exactly the versions GX 1.24's templates name (render/view/templates); vega's majors pinned to
# the newest release of each at the time of writing.
PACKAGES = (
    Package("bootstrap", "4.3.1", keep=("dist",),
            integrity="sha512-rXqOmH1VilAt2DyPzluTi2blhk17bO7ef+zLLPlWvG494pDxcM234pJ8wTc/6R40UWizAIIMgxjvxZg5kmsbag=="),
    Package("jquery", "3.7.1", keep=("dist",),
            integrity="sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg=="),
    Package("popper.js", "1.12.9", keep=("dist",),
            integrity="sha512-s0EEi9xiSCdqz9lV4IiVH5yIZnDX/U1t0tCjB+0jXx9jW8lrR7kOpVupiUg175ogqVoudpDXHF1p6dKATCHMeg=="),
    Package("bootstrap-table", "1.19.1", keep=("dist",),
            integrity="sha512-WvV+l1AI/C+zThaKmfHmi/IuayVNB0qdFyEhFx1jyZhO0oLtNJNANkCR3rvJf6Dkh72dsLElxpE/bzK9seEQLA=="),
    Package("bootstrap-datepicker", "1.9.0", keep=("dist",),
            integrity="sha512-9rYYbaVOheGYxjOr/+bJCmRPihfy+LkLSg4fIFMT9Od8WwWB/MB50w0JO1eBgKUMbb7PFHQD5uAfI3ArAxZRXA=="),
    Package("@forevolve/bootstrap-dark", "1.1.0", keep=("dist",),
            integrity="sha512-A3ucpEpxPoTVO490lZZCfjPXxv832l7mm1IxX3bXyxvgwnPGXDLyh7dWrphXKO8YBAu3EswbBEu3VSW8NRMW3A=="),
    Package("@fortawesome/fontawesome-free", "6.6.0", keep=("css", "webfonts"),
            integrity="sha512-60G28ke/sXdtS9KZCpZSHHkCbdsOGEhIUGlwq6yhY74UpTiToIh8np7A8yphhM4BWsvNFtIvLpi4co+h9Mr9Ow=="),
    Package("vega", "5.33.1", keep=("build",),
            integrity="sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw=="),
    Package("vega-lite", "5.23.0", keep=("build",),
            integrity="sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    Package("vega-embed", "6.29.0", keep=("build",),
            integrity="sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="),
)
_S3 = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"

# (CDN URL prefix, path under the assets route). A prefix ending in "/" maps a whole folder; one
# without maps a single file (its query string dropped). GX names bootstrap-table's filter-control
# CSS at 1.19.0 and everything else at 1.19.1: both are served from 1.19.1. The dark-mode logo
# GX loads from S3 is not in its package; the light one stands in for it.
CDN_URLS = (
    ("https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/", "bootstrap@4.3.1/dist/"),
    ("https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/", "bootstrap@4.3.1/dist/"),
    ("https://code.jquery.com/jquery-3.7.1.min.js", "jquery@3.7.1/dist/jquery.min.js"),
    ("https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/", "popper.js@1.12.9/dist/"),
    ("https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/", "bootstrap-datepicker@1.9.0/dist/"),
    ("https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/", "@fortawesome/fontawesome-free@6.6.0/"),
    ("https://unpkg.com/bootstrap-table@1.19.1/", "bootstrap-table@1.19.1/"),
    ("https://unpkg.com/bootstrap-table@1.19.0/", "bootstrap-table@1.19.1/"),
    ("https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/", "@forevolve/bootstrap-dark@1.1.0/"),
    ("https://cdn.jsdelivr.net/npm/vega@5", "vega@5.33.1/build/vega.min.js"),
    ("https://cdn.jsdelivr.net/npm/vega-lite@5", "vega-lite@5.23.0/build/vega-lite.min.js"),
    ("https://cdn.jsdelivr.net/npm/vega-embed@6", "vega-embed@6.29.0/build/vega-embed.min.js"),
    (_S3 + "logo-long.png", f"{GX_ASSETS}/images/logo-long.png"),
    (_S3 + "full_logo_dark.png", f"{GX_ASSETS}/images/logo-long.png"),
)
# A CDN URL as it appears in a page: up to the closing quote or parenthesis.
_URL = re.compile(r"""https://[^\s"'()<>]+""")


class AssetsMissing(RuntimeError):
    """The assets are not installed where the plugin looks."""


def assets_dir() -> Path:
    """Where the packages are installed: $CRITEO_DATA_DOCS_ASSETS, else .tools/data-docs-assets."""
    return Path(os.environ.get("CRITEO_DATA_DOCS_ASSETS") or REPO_ROOT / ".tools" / "data-docs-assets")


def gx_static_dir() -> Path:
    """great_expectations' own static folder (styles, fonts, logo), found without importing GX."""
    import importlib.util

    spec = importlib.util.find_spec("great_expectations")
    if spec is None or not spec.submodule_search_locations:
        raise AssetsMissing("great_expectations is not installed in the API server's environment")
    return Path(next(iter(spec.submodule_search_locations))) / "render" / "view" / "static"


def local_path(cdn_url: str) -> str | None:
    """The assets-route path serving `cdn_url`, or None for a URL this table does not know."""
    bare = cdn_url.split("?", 1)[0].split("#", 1)[0]
    for prefix, target in CDN_URLS:
        if target.endswith("/") and prefix.endswith("/") and bare.startswith(prefix):
            return target + bare[len(prefix):]
        if bare == prefix:
            return target
    return None


def rewrite(text: str, assets_url: str) -> str:
    """`text` (HTML or CSS) with each known CDN URL replaced by its URL under `assets_url`.

    Unknown URLs are left alone: navigation links (greatexpectations.io) are not requests, and an
    unknown asset is blocked by the pages' CSP rather than silently fetched."""
    base = assets_url.rstrip("/")

    def swap(m: re.Match) -> str:
        path = local_path(m.group(0))
        return f"{base}/{path}" if path else m.group(0)

    return _URL.sub(swap, text)


def resolve(rel: str, root: Path | None = None) -> Path:
    """The installed file for an assets-route path; FileNotFoundError if there is none. `rel`
    must already be split by the caller's path check (no '..', no hidden segments)."""
    if rel.startswith(GX_ASSETS + "/"):
        base, rest = gx_static_dir(), rel[len(GX_ASSETS) + 1:]
    else:
        base, rest = root or assets_dir(), rel
    path = (base / rest).resolve()
    if not path.is_relative_to(base.resolve()) or not path.is_file():
        raise FileNotFoundError(rel)
    return path


def missing(root: Path | None = None) -> list[str]:
    """The packages not installed under `root` (each named with its version)."""
    root = root or assets_dir()
    return [p.folder for p in PACKAGES if not (root / p.folder / MARKER).is_file()]


def _verify(data: bytes, package: Package) -> None:
    algo, _, expected = package.integrity.partition("-")
    got = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if got != expected:
        raise ValueError(f"{package.tarball}: {algo} integrity mismatch (got {got}, lock says {expected}); "
                         "nothing was installed")


def install_package(package: Package, root: Path, timeout_s: float = 120) -> Path:
    """Download one tarball, check its integrity, unpack its `keep` folders into root/<name>@<version>.

    Unpacked into a hidden staging folder then renamed, so a half-installed package never looks
    installed."""
    dest = root / package.folder
    if (dest / MARKER).is_file():
        return dest
    with urllib.request.urlopen(package.tarball, timeout=timeout_s) as resp:
        data = resp.read()
    _verify(data, package)
    stage = root / f".{package.folder.replace('/', '_')}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            # npm tarballs hold everything under "package/"
            rel = member.name.split("/", 1)[1] if "/" in member.name else ""
            if not member.isfile() or not any(rel.startswith(k + "/") for k in package.keep):
                continue
            target = (stage / rel).resolve()
            if not target.is_relative_to(stage.resolve()):
                raise ValueError(f"{package.tarball}: member {member.name} leaves the package folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    (stage / MARKER).write_text(f"{package.tarball}\n{package.integrity}\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    stage.rename(dest)
    return dest


def install(root: Path | None = None) -> list[Path]:
    root = root or assets_dir()
    root.mkdir(parents=True, exist_ok=True)
    return [install_package(p, root) for p in PACKAGES]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m operators.links.data_docs_assets",
                                     description="Install or check the data docs' static assets (npm registry).")
    parser.add_argument("command", choices=("install", "check"))
    parser.add_argument("--dest", type=Path, default=None,
                        help="default: $CRITEO_DATA_DOCS_ASSETS or .tools/data-docs-assets")
    args = parser.parse_args(argv)
    root = args.dest or assets_dir()
    if args.command == "install":
        for path in install(root):
            print(f"installed {path}")
        return 0
    absent = missing(root)
    if absent:
        print(f"missing under {root}: {', '.join(absent)} (run: make setup)")
        return 1
    print(f"all {len(PACKAGES)} packages installed under {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
