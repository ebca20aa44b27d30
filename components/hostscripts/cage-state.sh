# shellcheck shell=bash
# What a host shows of each cage in CLAWS (space-separated names): one JSON line per cage saying whether
# its key is on the tmpfs, its volume is mounted, the kernel holds its audit rules (tagged
# AUDIT_KEY_PREFIX<claw>), and its claw and proxy containers are running. After a
# reboot this is what tools/recover.py reads. It only reads, and prints no secret.
# Header: CLAWS, KEY_ROOT, VOLUME_ROOT, AUDIT_KEY_PREFIX.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C

flag() { if "$@"; then printf true; else printf false; fi; }
audited() { command -v auditctl >/dev/null && auditctl -l -k "$AUDIT_KEY_PREFIX$1" | grep -q -- "-F key=$AUDIT_KEY_PREFIX$1\$"; }
running() { [[ $(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null) == true ]]; }
boot_id=$(cat /proc/sys/kernel/random/boot_id)
for claw in $CLAWS; do
  printf '{"claw": "%s", "boot_id": "%s", "key": %s, "volume_mounted": %s, "audited": %s, "claw_running": %s, "proxy_running": %s}\n' \
    "$claw" "$boot_id" \
    "$(flag test -s "$KEY_ROOT/$claw/key")" \
    "$(flag mountpoint -q "$VOLUME_ROOT/$claw/mnt")" \
    "$(flag audited "$claw")" \
    "$(flag running "claw-$claw")" \
    "$(flag running "proxy-$claw")"
done
