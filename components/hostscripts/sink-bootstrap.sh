# shellcheck shell=bash
# Bring a Debian 13 host to the state of the stack's audit sink; re-running it repairs drift. It runs no
# cages and no Docker: the generic hardening (lib/host-common.sh: hostname, admin keys, sysctls, sshd,
# automatic security updates, a host firewall whose input policy is drop), then Debian's stunnel4 and
# systemd-journal-remote with every file of the trail (components/trailship.py sink_files). The
# certificates arrive apart (sink-certs-install.sh, over the pinned SSH connection): until they are in
# TRAIL_DIR the trail's units are left stopped; once they are, a changed file restarts them.
# The same script runs on a cloud server (from cloud-init) and on an adopted dedicated server (over
# SSH); it expects the derived host key in place.
# Header (readonly): what lib/host-common.sh and lib/sink-units.sh read, and PACKAGES (space-separated),
# JOURNAL_REMOTE (its binary), VERIFY_UNITS (unit files of ours that systemd-analyze checks,
# space-separated), SINK_FILES (the trail's files, as put_files reads them).

require_system
set_host_name
install_admin_keys

log "sysctls"
install_sysctls
install_sshd_config

log "the trail's files"
# Before the packages, so that no unit of theirs ever starts without our drop-ins (journal-remote's
# socket would listen on every address); confold keeps them on every upgrade.
before=$CHANGED
put_files < <(printf '%s' "$SINK_FILES")
trail_changed=0
if [ "$CHANGED" != "$before" ]; then trail_changed=1; fi

log "packages and automatic security updates"
apt-get update -q
read -ra wanted <<<"$PACKAGES"
install_packages "${wanted[@]}"
install_auto_upgrades

write_firewall
load_firewall

log "the trail's units"
systemctl daemon-reload
[ -x "$JOURNAL_REMOTE" ] || die "systemd-journal-remote is installed but $JOURNAL_REMOTE is not there"
read -ra trail_units <<<"$SINK_UNITS"
for unit in "${trail_units[@]}"; do
  systemctl cat "$unit" >/dev/null || die "no unit $unit: the trail cannot start"
done
read -ra unit_files <<<"$VERIFY_UNITS"
systemd-analyze verify "${unit_files[@]}" || die "systemd-analyze rejects ${unit_files[*]}"
if sink_certificates_present; then
  # A changed file restarts the units; otherwise a unit that stopped is started again (drift repaired).
  if [ "$trail_changed" = 1 ]; then restart_sink_units; else systemctl enable --now "${trail_units[@]}"; fi
else
  log "no certificates in $TRAIL_DIR yet: the trail's units start once they are installed"
fi

log "verify"
verify_host
if sink_certificates_present; then verify_sink_units; fi
log "audit sink $HOST_NAME is hardened"
