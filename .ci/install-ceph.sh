#!/usr/bin/env bash
# Installs what adapters/testing/ceph.py (CephRGWServer) runs: a Ceph monitor, an OSD and the
# RADOS Gateway, from Debian's own archive (bookworm: Ceph 16.2), about 20 s:
#
#   .ci/install-ceph.sh
#
# Idempotent: does nothing when the packages are installed, and refreshes the apt index only
# when it does not know them (a fresh container has no index at all) or an install from it fails.
set -euo pipefail

packages=(ceph-mon ceph-osd radosgw)

missing=()
for p in "${packages[@]}"; do
  # "install ok installed" only for a package fully unpacked and configured.
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "ceph: ${packages[*]} already installed"
  exit 0
fi

sudo=()
if ((EUID != 0)); then
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

known() {
  # apt-cache show exits 0 even for unknown names; policy prints a candidate only for known ones.
  local p
  for p in "$@"; do
    apt-cache policy "$p" 2>/dev/null | grep -q '^  Candidate: [^(]' || return 1
  done
}

install() {
  # --no-install-recommends: ceph-mgr, ceph-mds and the rest are not started by the tests.
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if ! known "${missing[@]}"; then
  "${sudo[@]}" apt-get update -qq
fi
if ! install; then
  # An old index can name versions the mirror no longer has (404): refresh it, try once more.
  "${sudo[@]}" apt-get update -qq
  install
fi
echo "ceph: installed ${missing[*]}"
