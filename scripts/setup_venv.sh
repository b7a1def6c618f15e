#!/usr/bin/env bash
# Create or update .venv for coirl_ros: find a Python 3.12, install the Debian libraries MuJoCo
# rendering and pyrealsense2 need, install the locked dependencies, and skip all of it when
# nothing changed since the last successful run (stamp file inside the venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${COIRL_VENV:-$ROOT/.venv}"
LOCK="$ROOT/requirements/lock.txt"
STAMP="$VENV/.coirl-install-stamp"
# MuJoCo offscreen rendering (EGL/OSMesa), pyrealsense2 (libusb), the dashboard's browser test (chromium).
APT_PACKAGES=(libegl1 libgl1-mesa-dri libosmesa6 libusb-1.0-0 chromium chromium-driver)

log() { printf '[setup] %s\n' "$*" >&2; }

is_py312() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; }

find_python312() {
  local candidates=()
  [[ -n "${COIRL_PYTHON:-}" ]] && candidates+=("$COIRL_PYTHON")
  candidates+=("$(command -v python3.12 || true)" "$(command -v python3 || true)")
  local pyenv_root="${PYENV_ROOT:-}"
  if [[ -z "$pyenv_root" ]] && command -v pyenv >/dev/null 2>&1; then pyenv_root="$(pyenv root)"; fi
  for root in "$pyenv_root" "$HOME/.pyenv" /root/.pyenv; do
    [[ -n "$root" && -d "$root/versions" ]] || continue
    # Newest 3.12.x first.
    while IFS= read -r dir; do candidates+=("$dir/bin/python3.12"); done \
      < <(ls -d "$root"/versions/3.12* 2>/dev/null | sort -rV)
  done
  candidates+=(/usr/bin/python3.12 /usr/local/bin/python3.12)
  for c in "${candidates[@]}"; do
    [[ -n "$c" && -x "$c" ]] && is_py312 "$c" && { echo "$c"; return 0; }
  done
  return 1
}

install_apt_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "WARNING: missing system packages ${missing[*]} (MuJoCo rendering / RealSense / dashboard browser test)."
    log "         install them with: sudo apt-get install ${missing[*]}"
  fi
}

if [[ "${1:-}" == "--print-python" ]]; then find_python312; exit $?; fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  log "not a Debian/Ubuntu system: install EGL/OSMesa, libusb-1.0 and chromium + chromedriver yourself"
else
  install_apt_packages
fi

PYTHON="$(find_python312)" || {
  log "ERROR: no Python 3.12 found (ROS 2 Jazzy and LeRobot 0.6 need exactly 3.12)."
  log "  looked at: \$COIRL_PYTHON, python3.12 and python3 on PATH, \$(pyenv root)/versions/3.12*, /usr/bin/python3.12"
  log "  install one with 'pyenv install 3.12' or 'sudo apt-get install python3.12 python3.12-venv' (Ubuntu 24.04),"
  log "  or point COIRL_PYTHON at an interpreter."
  exit 1
}

if [[ -x "$VENV/bin/python" ]] && ! is_py312 "$VENV/bin/python"; then
  log "existing $VENV is not Python 3.12; recreating it"
  rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

# Everything that changes what is installed goes into the stamp.
want_stamp="$(cat "$LOCK" "$ROOT/setup.py" "$ROOT/setup.cfg" "$ROOT/scripts/venv_packages.py" | sha256sum | cut -d' ' -f1)-$("$VENV/bin/python" -V 2>&1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
  log "dependencies up to date ($VENV)"
  exit 0
fi

log "installing locked dependencies into $VENV (first run downloads ~3 GB: torch with CUDA libraries)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Quiet pip, minus the warnings about unreachable local index folders some machines configure.
pip_install() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
pip_install --upgrade "pip>=24"
pip_install -r "$LOCK"
"$VENV/bin/python" "$ROOT/scripts/venv_packages.py" prune "$LOCK"
pip_install --no-deps --no-build-isolation -e "$ROOT"
echo "$want_stamp" > "$STAMP"
log "done"
