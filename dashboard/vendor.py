"""Third-party browser code fetched at install time, never committed.

The dashboard serves plotly.js's *basic* partial bundle (every chart we draw is a scatter,
bar or pie trace; ``dashboard/static.py``) instead of Dash's full ``plotly.min.js``. The
bundle is npm's ``plotly.js-basic-dist-min`` at the plotly.js version the installed
``plotly`` package ships, pinned here with its npm integrity hash (sha512). ``make venv``
and the Dockerfile run ``python -m dashboard.vendor``: it downloads the tarball from the
npm registry (``--registry URL`` for a mirror; ``make venv NPM_REGISTRY=URL``), checks
the hash and writes the bundle and its licence to ``assets/vendor/`` (ignored by git). At
run time nothing is fetched: a machine installed without network serves the full bundle
Dash ships (``static.use_basic_plotly`` logs it), which works the same, only heavier.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR_DIR = ROOT / "assets" / "vendor"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str  # npm's dist.integrity: "sha512-<base64>"
    files: dict[str, str]  # path in the tarball → file name under assets/vendor/

    def tarball_url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.name}-{self.version}.tgz"


PLOTLY_BASIC = Package(
    name="plotly.js-basic-dist-min",
    version="4.1.1",
    integrity="sha512-1oNF8PeQx2hv/y7tqEVWKD3JGwn/MGEMQ8mL9HUwsaqG9FGy/OU5FHUHvzqbqxN4mnwZGI9abTiE775C4kkjMQ==",
    files={
        "package/plotly-basic.min.js": "plotly-basic.min.js",
        "package/LICENSE": "plotly-basic.LICENSE.txt",
    },
)
PACKAGES = (PLOTLY_BASIC,)


class IntegrityError(ValueError):
    """The downloaded tarball is not the pinned one."""


def check_integrity(data: bytes, integrity: str) -> None:
    algo, _, want = integrity.partition("-")
    got = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if got != want:
        raise IntegrityError(f"{algo} of the download is {got}, pinned {want}")


def extract(pkg: Package, data: bytes, dest: Path) -> list[Path]:
    """Check the tarball against the pin, then write the package's files under ``dest``."""
    check_integrity(data, pkg.integrity)
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member, name in pkg.files.items():
            f = tar.extractfile(member)
            if f is None:
                raise IntegrityError(f"{member} missing from {pkg.name}")
            target = dest / name
            tmp = target.with_suffix(target.suffix + ".part")
            tmp.write_bytes(f.read())
            tmp.replace(target)
            out.append(target)
    return out


def present(pkg: Package, dest: Path = VENDOR_DIR) -> bool:
    return all((dest / name).is_file() for name in pkg.files.values())


NPM = "https://registry.npmjs.org"


def fetch(pkg: Package, dest: Path = VENDOR_DIR, registry: str = NPM) -> list[Path]:
    url = pkg.tarball_url(registry)
    with urllib.request.urlopen(url, timeout=60) as resp:
        data = resp.read()
    return extract(pkg, data, dest)


def main(argv: list[str] | None = None) -> int:
    """Fetch what is missing; never fail the install (the full bundle is the fallback)."""
    parser = argparse.ArgumentParser(prog="python -m dashboard.vendor", description=__doc__)
    parser.add_argument("--registry", default=NPM, help="an npm registry (a mirror)")
    args = parser.parse_args(argv)
    for pkg in PACKAGES:
        if present(pkg):
            continue
        try:
            for path in fetch(pkg, registry=args.registry or NPM):
                print(f"vendor: {pkg.name}@{pkg.version} → {path.relative_to(ROOT)}")
        except (OSError, IntegrityError) as exc:
            print(
                f"vendor: {pkg.name}@{pkg.version} not fetched ({exc}); "
                "the dashboard serves Dash's full plotly.js instead",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
