#!/usr/bin/env bash
# Prepares a checkout for development, tests and CI: the Python virtualenv with the
# package and its test extras, and the pinned FerretDB binary that serves as the
# embedded MongoDB wire-protocol database. Safe to run again: each step is skipped
# when what it produces is already there and current.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

# --- Python -------------------------------------------------------------------
VENV="$ROOT/.venv"
STAMP="$VENV/.fhirserver-install-stamp"

if [[ ! -x "$VENV/bin/python" ]]; then
    PY=""
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PY="$candidate"
            break
        fi
    done
    [[ -n "$PY" ]] || die "Python 3.11 or newer is needed (tried python3.11, python3)"
    say "creating virtualenv .venv with $(command -v "$PY") ($("$PY" --version 2>&1))"
    "$PY" -m venv "$VENV" || die "could not create .venv"
    rm -f "$STAMP"
fi

WANT_STAMP="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
    say "Python dependencies are current (pyproject.toml unchanged)"
else
    say "installing fhirserver and its test dependencies into .venv"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]' \
        || die "pip install -e '.[test]' failed"
    printf '%s\n' "$WANT_STAMP" > "$STAMP"
fi

# --- FerretDB -----------------------------------------------------------------
# The version comes from scripts/ferretdb/go.mod, so that file and its go.sum are
# the single place where the pin lives.
MODDIR="$ROOT/scripts/ferretdb"
BIN="$ROOT/.tools/bin/ferretdb"
UPSTREAM_VERSION="$(awk '$1 == "require" && $2 == "github.com/FerretDB/FerretDB" { print $3 }' "$MODDIR/go.mod")"
[[ -n "$UPSTREAM_VERSION" ]] || die "no FerretDB version found in scripts/ferretdb/go.mod"
# The build applies scripts/ferretdb/patches/*.patch (each says why) and names
# itself after them, so a binary built before a patch changed is rebuilt.
PATCHES=()
for PATCH in "$MODDIR"/patches/*.patch; do
    [[ -f "$PATCH" ]] && PATCHES+=("$PATCH")
done
if (( ${#PATCHES[@]} )); then
    FERRETDB_VERSION="$UPSTREAM_VERSION-fhirserver.$(cat "${PATCHES[@]}" | sha256sum | cut -c1-8)"
else
    FERRETDB_VERSION="$UPSTREAM_VERSION"
fi

installed_version() {
    [[ -x "$BIN" ]] || return 0
    "$BIN" --version 2>/dev/null | awk '$1 == "version:" { print $2 }' || true
}

if [[ "$(installed_version)" == "$FERRETDB_VERSION" ]]; then
    say "FerretDB $FERRETDB_VERSION is installed at .tools/bin/ferretdb"
else
    command -v go >/dev/null 2>&1 || die "the Go toolchain is needed to build FerretDB (go not found on PATH)"
    say "building FerretDB $FERRETDB_VERSION into .tools/bin/ferretdb with $(go version) (takes a few minutes on a cold cache)"
    # FerretDB's cmd/ferretdb reads its version from build/version/version.txt, a
    # file its release process generates and the published module lacks; a binary
    # built straight from the module cache panics on start. So the build runs from
    # a vendored copy of the pinned modules (checked against go.sum) with that file
    # written in.
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    cp "$MODDIR/go.mod" "$MODDIR/go.sum" "$MODDIR/tools.go" "$WORK/"
    export GOWORK=off GOFLAGS=-buildvcs=false
    (cd "$WORK" && go mod vendor) || die "downloading FerretDB's modules failed"
    VERSION_DIR="$WORK/vendor/github.com/FerretDB/FerretDB/build/version"
    [[ -d "$VERSION_DIR" ]] || die "vendored FerretDB has no build/version directory"
    printf '%s\n' "$FERRETDB_VERSION" > "$VERSION_DIR/version.txt"
    chmod -R u+w "$WORK/vendor/github.com/FerretDB/FerretDB"
    for PATCH in ${PATCHES[@]+"${PATCHES[@]}"}; do
        (cd "$WORK/vendor/github.com/FerretDB/FerretDB" && git apply -p1 "$PATCH") \
            || die "applying $(basename "$PATCH") to FerretDB $UPSTREAM_VERSION failed"
    done
    mkdir -p "$ROOT/.tools/bin"
    (cd "$WORK" && GOBIN="$ROOT/.tools/bin" GOFLAGS="-buildvcs=false -mod=vendor" \
        go install github.com/FerretDB/FerretDB/cmd/ferretdb) || die "building FerretDB failed"
    rm -rf "$WORK"
    trap - EXIT
    GOT="$(installed_version)"
    [[ "$GOT" == "$FERRETDB_VERSION" ]] \
        || die "built .tools/bin/ferretdb reports version '${GOT:-none}', expected $FERRETDB_VERSION"
    say "FerretDB $FERRETDB_VERSION installed at .tools/bin/ferretdb"
fi

# --- Browser tests ------------------------------------------------------------
# tests/browser drives Debian's Chromium through chromedriver (selenium) against a
# page that uses the npm package fhirclient. Both are installed here when missing
# and this script may install system packages (root, or passwordless sudo);
# otherwise the browser tests skip (except under CI=true, where they fail).
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
    say "chromium and chromedriver are installed (browser tests)"
else
    SUDO=()
    if [[ "$(id -u)" -ne 0 ]] && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "chromium/chromedriver missing and no apt-get to install them: browser tests will be skipped"
    elif [[ "$(id -u)" -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
        say "chromium/chromedriver missing and installing them needs root or passwordless sudo: browser tests will be skipped"
    else
        say "installing chromium and chromium-driver with apt-get (browser tests)"
        LOG="$(mktemp)"
        if "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$LOG" 2>&1 \
            && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends chromium chromium-driver >>"$LOG" 2>&1; then
            say "chromium and chromedriver installed"
        else
            tail -n 20 "$LOG" >&2
            say "apt-get could not install chromium and chromium-driver: browser tests will be skipped"
        fi
        rm -f "$LOG"
    fi
fi

# npm packages, pinned by each folder's package-lock.json: the browser tests' page
# (tests/browser) and the web app served at /app/ (fhirserver/webapp: fhirclient,
# jsQR, Chart.js, which the server serves from that node_modules; the package is
# installed editable, so they are live). Optional dependencies are left out:
# fhirclient's browser build is self-contained, and the optional ones (React Native
# crypto shims) are hundreds of packages it never loads in a browser.
npm_install() {  # folder, what it is for
    local dir="$ROOT/$1" what="$2"
    local stamp="$dir/node_modules/.fhirserver-npm-stamp"
    local want
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        say "npm packages of $what are current ($1/package-lock.json unchanged)"
    elif ! command -v npm >/dev/null 2>&1; then
        say "npm not found, so the npm packages of $what are missing: browser tests will be skipped"
    else
        say "installing the npm packages of $what into $1/node_modules (npm ci)"
        (cd "$dir" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) \
            || die "npm ci in $1 failed"
        printf '%s\n' "$want" > "$stamp"
    fi
}
npm_install tests/browser "the browser tests' page"
npm_install fhirserver/webapp "the web app (/app/)"

say "setup complete"
