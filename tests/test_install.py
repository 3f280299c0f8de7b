"""install-system.sh takes the contrib/non-free sources from the machine's own Debian archive."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("debian_sources", ROOT / "scripts" / "debian_sources.py")
debian_sources = importlib.util.module_from_spec(spec)
spec.loader.exec_module(debian_sources)


def write(root: Path, name: str, text: str) -> None:
    path = root / "etc" / "apt" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_local_mirror_and_its_keyring_are_reused(tmp_path):
    write(tmp_path, "sources.list.d/debian.sources",
          "Types: deb\nURIs: http://mirror.local/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
          "Signed-By: /etc/apt/keyrings/local.gpg\n\n"
          "Types: deb\nURIs: http://mirror.local/debian-security\nSuites: bookworm-security\nComponents: main\n")
    assert debian_sources.stanza("bookworm", tmp_path) == (
        "Types: deb\nURIs: http://mirror.local/debian\nSuites: bookworm\nComponents: contrib non-free\n"
        "Signed-By: /etc/apt/keyrings/local.gpg\n")


def test_one_line_sources_disabled_stanzas_and_our_own_file(tmp_path):
    write(tmp_path, "sources.list.d/triage-contrib-nonfree.sources",
          "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\n")
    write(tmp_path, "sources.list.d/off.sources",
          "Enabled: no\nTypes: deb\nURIs: http://old.example/debian\nSuites: trixie\nComponents: main\n")
    write(tmp_path, "sources.list", "# deb http://commented.example/debian trixie main\n"
                                    "deb-src http://src.example/debian trixie main\n"
                                    "deb [arch=amd64 signed-by=/k.gpg] http://proxy:3142/debian trixie main contrib\n")
    assert "URIs: http://proxy:3142/debian\n" in debian_sources.stanza("trixie", tmp_path)
    assert "Signed-By: /k.gpg" in debian_sources.stanza("trixie", tmp_path)
    assert debian_sources.stanza("bookworm", tmp_path) is None
