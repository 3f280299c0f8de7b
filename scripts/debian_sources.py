"""The machine's own Debian archive (URIs and keyring), for the contrib/non-free sources file that
install-system.sh writes: behind a local mirror the mirror is used, not a host named in the script.

Prints a deb822 stanza for `contrib non-free` of the given suite; exits 1 when no source of the
Debian main archive for that suite is configured (the caller then says so and stops).
Usage: python3 scripts/debian_sources.py CODENAME [SOURCES_DIR_ROOT]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def _deb822(text: str):
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:
                fields[key] += "\n " + line.strip()  # an embedded key stays a multi-line field
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        yield (fields.get("types", "").split(), fields.get("uris", "").split(),
               fields.get("suites", "").split(),
               fields.get("components", "").split(), fields.get("signed-by"))


def _one_line(text: str):
    for line in text.splitlines():
        m = re.match(r"^\s*deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line.split("#", 1)[0])
        if m:
            options = dict(o.split("=", 1) for o in (m.group(1) or "").split() if "=" in o)
            yield ["deb"], [m.group(2)], [m.group(3)], m.group(4).split(), options.get("signed-by")


def main_archive(root: Path, codename: str) -> tuple[list[str], str | None] | None:
    """(URIs, Signed-By) of the first enabled source serving `codename` main, or None."""
    apt = root / "etc" / "apt"
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list")),
             *sorted((apt / "sources.list.d").glob("*.sources"))]
    for f in files:
        if not f.is_file() or f.name.startswith("triage-"):
            continue
        entries = _deb822(f.read_text()) if f.suffix == ".sources" else _one_line(f.read_text())
        for types, uris, suites, components, signed_by in entries:
            if "deb" in types and codename in suites and "main" in components and uris:
                return uris, signed_by
    return None


def stanza(codename: str, root: Path = Path("/")) -> str | None:
    found = main_archive(root, codename)
    if found is None:
        return None
    uris, signed_by = found
    lines = ["Types: deb", f"URIs: {' '.join(uris)}", f"Suites: {codename}", "Components: contrib non-free"]
    if signed_by:
        lines.append(f"Signed-By: {signed_by}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = stanza(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/"))
    if text is None:
        sys.exit(1)
    sys.stdout.write(text)
