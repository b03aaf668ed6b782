#!/usr/bin/env bash
# Install (or upgrade) Bzzz as a systemd service from this checkout.
#
#   sudo ./install-service.sh                    # from PyPI and this checkout
#   sudo ./install-service.sh --wheelhouse DIR   # offline, from a folder of wheels
#
# Make the folder where there is internet, from this checkout: pip wheel -w DIR .
#
# Idempotent: running it again upgrades the package and restarts the service. It never
# overwrites /etc/bzzz/config.toml or the GitHub token; it refuses to restart the service on a
# config that does not validate.
set -euo pipefail

PREFIX=/opt/bzzz
VENV="$PREFIX/venv"
CONF_DIR=/etc/bzzz
CONFIG="$CONF_DIR/config.toml"
TOKEN="$CONF_DIR/github-token"
UNIT=/etc/systemd/system/bzzz.service
LINK=/usr/local/bin/bzzz
SERVICE_USER=bzzz
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WHEELHOUSE=""

say() { printf 'install-service: %s\n' "$*"; }
die() { printf 'install-service: error: %s\n' "$*" >&2; exit 1; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) [ $# -ge 2 ] || usage 2; WHEELHOUSE="$(cd "$2" && pwd)" || die "no such directory: $2"; shift 2 ;;
        --wheelhouse=*) WHEELHOUSE="$(cd "${1#*=}" && pwd)" || die "no such directory: ${1#*=}"; shift ;;
        -h|--help) usage 0 ;;
        *) printf 'install-service: unknown argument: %s\n' "$1" >&2; usage 2 ;;
    esac
done

# ---- checks ------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
command -v systemctl >/dev/null || die "systemctl not found: this installer needs systemd"
[ -d /run/systemd/system ] || die "systemd is not running as the init system here"
PYTHON="$(command -v python3 || true)"
[ -n "$PYTHON" ] || die "python3 not found (apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python >= 3.11 is required, found $("$PYTHON" -V 2>&1)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || die "the venv module is missing (apt-get install python3-venv)"
[ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/deploy/bzzz.service" ] \
    || die "run me from a bzzz checkout ($SRC has no pyproject.toml)"
# Not needed to join the mesh, only to take tasks: the node says so in `bzzz status`.
for tool in bwrap:bubblewrap git:git prlimit:util-linux; do
    command -v "${tool%%:*}" >/dev/null \
        || say "warning: ${tool%%:*} not found: this node will take no tasks (apt-get install ${tool#*:})"
done

# ---- user --------------------------------------------------------------------------------
if ! getent group "$SERVICE_USER" >/dev/null; then
    groupadd --system "$SERVICE_USER"
    say "created group $SERVICE_USER"
fi
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd --system --gid "$SERVICE_USER" --home-dir /var/lib/bzzz --no-create-home \
        --shell /usr/sbin/nologin --comment "Bzzz daemon" "$SERVICE_USER"
    say "created system user $SERVICE_USER"
fi

# ---- package -----------------------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "the virtualenv in $VENV is broken (Python upgraded?); recreating it"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$PREFIX"
    "$PYTHON" -m venv "$VENV"
    say "created $VENV"
fi
pip_args=(--disable-pip-version-check --quiet)
PACKAGE="$SRC"
if [ -n "$WHEELHOUSE" ]; then
    pip_args+=(--no-index --find-links "$WHEELHOUSE")
    # bzzz's own wheel, as `pip wheel -w DIR .` leaves it there: building the checkout offline
    # would need setuptools and wheel, which that folder does not hold. The newest if several.
    for wheel in "$WHEELHOUSE"/bzzz-*.whl; do
        if [ -f "$wheel" ] && { [ "$PACKAGE" = "$SRC" ] || [ "$wheel" -nt "$PACKAGE" ]; }; then
            PACKAGE="$wheel"
        fi
    done
    say "installing $PACKAGE offline, dependencies from $WHEELHOUSE"
fi
# pip's own words when it fails (its last lines), not the ERR trap's line number.
pip_install() {
    local output how="make the folder where there is internet with: pip wheel -w DIR $SRC"
    if ! output="$("$VENV/bin/pip" install "${pip_args[@]}" "$@" 2>&1)"; then
        printf '%s\n' "$output" | tail -n 15 >&2
        if [ -z "$WHEELHOUSE" ]; then
            die "pip could not install $PACKAGE (its error is above)"
        elif [ "$PACKAGE" = "$SRC" ]; then
            die "$WHEELHOUSE has no bzzz wheel and building $SRC offline failed (above); $how"
        fi
        die "pip could not install $PACKAGE from $WHEELHOUSE (above); $how"
    fi
}
# Dependencies first (upgraded as the package asks), then bzzz itself, always reinstalled: the
# version number does not change with every commit.
pip_install --upgrade "$PACKAGE"
pip_install --force-reinstall --no-deps "$PACKAGE"
VERSION="$("$VENV/bin/bzzz" version)"
ln -sfn "$VENV/bin/bzzz" "$LINK"
say "installed bzzz $VERSION in $VENV ($LINK)"

# ---- configuration -----------------------------------------------------------------------
install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
if [ -e "$CONFIG" ]; then
    say "keeping the existing $CONFIG"
else
    # The system daemon's directories, written out so that `bzzz status` run by an operator
    # (not root, not the service) finds the same socket.
    sed -e 's|^state_dir = ""|state_dir = "/var/lib/bzzz"|' \
        -e 's|^runtime_dir = ""|runtime_dir = "/run/bzzz"|' \
        "$SRC/deploy/config.example.toml" > "$CONFIG.new"
    chown root:"$SERVICE_USER" "$CONFIG.new"
    chmod 0640 "$CONFIG.new"
    mv "$CONFIG.new" "$CONFIG"
    say "wrote $CONFIG from the example"
fi
if [ ! -e "$TOKEN" ]; then
    say "no $TOKEN: the node runs P2P-only (put a GitHub token there, mode 0600, to take tasks)"
fi
if ! errors="$(runuser -u "$SERVICE_USER" -- "$VENV/bin/bzzz" config check "$CONFIG" 2>&1)"; then
    printf '%s\n' "$errors" >&2
    die "$CONFIG does not validate; fix it and run me again (the service was not restarted)"
fi

# ---- service -----------------------------------------------------------------------------
install -m 0644 "$SRC/deploy/bzzz.service" "$UNIT"
systemctl daemon-reload
systemctl enable --quiet bzzz.service
# restart starts a stopped service too; for Type=notify it returns once the daemon is READY.
if ! systemctl restart bzzz.service; then
    systemctl --no-pager --lines=20 status bzzz.service >&2 || true
    die "bzzz did not start; see journalctl -u bzzz"
fi
say "bzzz $VERSION is running"
systemctl --no-pager --lines=5 status bzzz.service || true
say "operators in group $SERVICE_USER can run 'bzzz status'; logs: journalctl -u bzzz -f"
