#!/usr/bin/env bash
# Remove the Bzzz service and program.
#
#   sudo ./uninstall-service.sh            # keeps config, identity, audit log and the bzzz user
#   sudo ./uninstall-service.sh --purge    # removes those too
#
# The journal is never touched: `journalctl -u bzzz` keeps the service's history.
set -euo pipefail

PREFIX=/opt/bzzz
CONF_DIR=/etc/bzzz
STATE_DIR=/var/lib/bzzz
UNIT=/etc/systemd/system/bzzz.service
LINK=/usr/local/bin/bzzz
SERVICE_USER=bzzz
PURGE=no

say() { printf 'uninstall-service: %s\n' "$*"; }
die() { printf 'uninstall-service: error: %s\n' "$*" >&2; exit 1; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=yes ;;
        -h|--help) sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) printf 'uninstall-service: unknown argument: %s\n' "$arg" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
command -v systemctl >/dev/null || die "systemctl not found"

if systemctl cat bzzz.service >/dev/null 2>&1; then
    systemctl disable --now --quiet bzzz.service || true
    say "stopped and disabled bzzz.service"
fi
rm -f "$UNIT"
rm -rf "$UNIT.d"
systemctl daemon-reload
systemctl reset-failed bzzz.service 2>/dev/null || true
say "removed the unit"

if [ -L "$LINK" ]; then rm -f "$LINK"; fi
rm -rf "$PREFIX"
say "removed the program ($PREFIX, $LINK)"

if [ "$PURGE" = yes ]; then
    rm -rf "$CONF_DIR" "$STATE_DIR" /var/lib/private/bzzz
    if getent passwd "$SERVICE_USER" >/dev/null; then userdel "$SERVICE_USER"; fi
    if getent group "$SERVICE_USER" >/dev/null; then groupdel "$SERVICE_USER"; fi
    say "purged $CONF_DIR, $STATE_DIR and the $SERVICE_USER user"
else
    kept=()
    [ -e "$CONF_DIR" ] && kept+=("config and token in $CONF_DIR")
    [ -e "$STATE_DIR" ] && kept+=("identity key and audit log in $STATE_DIR")
    getent passwd "$SERVICE_USER" >/dev/null && kept+=("the $SERVICE_USER user and group")
    if [ ${#kept[@]} -gt 0 ]; then
        for item in "${kept[@]}"; do say "kept $item"; done
        say "run with --purge to remove them too"
    fi
fi
