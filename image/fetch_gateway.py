"""Download IBKR's Client Portal Gateway zip and unpack it (image build step).

Usage: python3 fetch_gateway.py URL DEST [SHA256]

With SHA256 set the download must match it; without, the digest is printed so
that a build can be pinned later.  DEST ends up holding bin/run.sh and root/,
whether the zip has them at its top or inside one folder.
"""

import hashlib
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path


def fetch(url: str, dest: Path, sha256: str = "") -> str:
    """Download url, check its digest, unpack the gateway into dest; return digest."""
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "gateway.zip"
        with (
            urllib.request.urlopen(url, timeout=300) as response,
            archive.open("wb") as out,
        ):
            shutil.copyfileobj(response, out)
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if sha256 and digest != sha256.lower():
            raise SystemExit(
                f"fetch_gateway: {url} has SHA-256 {digest}, "
                f"not GATEWAY_SHA256={sha256}: IBKR published a new zip; "
                "check it and update the pin"
            )
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(unpacked)
        install(find_root(unpacked), dest)
    return digest


def find_root(unpacked: Path) -> Path:
    """Return the directory of the unpacked zip that holds bin/run.sh."""
    candidates = [unpacked, *sorted(p for p in unpacked.iterdir() if p.is_dir())]
    for candidate in candidates:
        if (candidate / "bin" / "run.sh").is_file():
            return candidate
    raise SystemExit("fetch_gateway: the zip holds no bin/run.sh: is it the gateway?")


def install(source: Path, dest: Path) -> None:
    """Move the gateway into dest (emptied first) and make run.sh executable."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    for item in source.iterdir():
        shutil.move(str(item), dest / item.name)
    (dest / "bin" / "run.sh").chmod(0o755)


def main(argv: list[str]) -> int:
    """Parse URL DEST [SHA256] and fetch."""
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    digest = fetch(argv[0], Path(argv[1]), argv[2] if len(argv) == 3 else "")
    print(f"fetch_gateway: {argv[0]} SHA-256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
