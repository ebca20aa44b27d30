# shellcheck shell=bash
# What every bootstrap shares (bootstrap.sh, a cage host's; sink-bootstrap.sh, the audit sink's): the
# helpers, the check of the system it runs on, and the generic hardening steps, each a function the
# bootstrap calls in its own order. Files are only rewritten, and services only restarted, when their
# content changes; every file arrives rendered in a header variable, never built here.
# Header (readonly) read here: HOST_NAME, DEBIAN_CODENAME, NFT_TABLE, FIREWALL_PATH, SYSCTL_PATH,
# SSHD_DROPIN_PATH, HOST_KEY_PATH, AUTHORIZED_KEYS, SYSCTL_CONF, SSHD_CONFIG, AUTO_UPGRADES,
# UNATTENDED_UPGRADES, FIREWALL_RULES, FIREWALL_UNIT.
umask 022
export DEBIAN_FRONTEND=noninteractive

log() { printf 'clawstaff-bootstrap: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

CHANGED=' '
# put PATH MODE < content: install the content when it differs; remember which files changed.
put() {
  local path=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path" && [ "$(stat -c %a "$path")" = "${mode#0}" ]; then
    rm -f "$tmp"
    return 0
  fi
  install -D -m "$mode" -o root -g root "$tmp" "$path"
  rm -f "$tmp"
  CHANGED="$CHANGED$path "
  log "wrote $path"
}
changed() { [[ $CHANGED == *" $1 "* ]]; }

# require_system: root, on the Debian release the script was rendered for, with systemd as init.
require_system() {
  [ "$(id -u)" = 0 ] || die "run as root"
  # shellcheck source=/dev/null
  . /etc/os-release
  # shellcheck disable=SC2015  # either test failing must die
  [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = "$DEBIAN_CODENAME" ] \
    || die "rendered for Debian $DEBIAN_CODENAME; this is ${PRETTY_NAME:-unknown}"
  [ -d /run/systemd/system ] || die "needs systemd as init"
}

set_host_name() {
  log "hostname"
  hostnamectl set-hostname "$HOST_NAME"
}

install_admin_keys() {
  log "admin SSH keys (authoritative list)"
  install -d -m 0700 -o root -g root /root/.ssh
  put /root/.ssh/authorized_keys 0600 < <(printf '%s' "$AUTHORIZED_KEYS")
}

install_sysctls() {
  put "$SYSCTL_PATH" 0644 < <(printf '%s' "$SYSCTL_CONF")
  sysctl -q -p "$SYSCTL_PATH"
}

install_sshd_config() {
  log "sshd: keys only, the derived host key only"
  [ -s "$HOST_KEY_PATH" ] || die "no host key at $HOST_KEY_PATH: install the derived key first"
  put "$SSHD_DROPIN_PATH" 0644 < <(printf '%s' "$SSHD_CONFIG")
  if ! sshd -t; then
    rm -f "$SSHD_DROPIN_PATH"
    die "sshd rejects the hardened configuration; removed it, sshd left unchanged"
  fi
  systemctl reload-or-restart ssh.service
}

# install_packages PACKAGE...: Debian's packages, keeping files the bootstrap wrote before (confold,
# as unattended-upgrades does on every later upgrade).
install_packages() {
  apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "$@"
}

# install_auto_upgrades: after unattended-upgrades is installed.
install_auto_upgrades() {
  put /etc/apt/apt.conf.d/20auto-upgrades 0644 < <(printf '%s' "$AUTO_UPGRADES")
  put /etc/apt/apt.conf.d/52clawstaff-unattended-upgrades 0644 < <(printf '%s' "$UNATTENDED_UPGRADES")
  systemctl enable --now apt-daily.timer apt-daily-upgrade.timer
}

# write_firewall: the ruleset (checked by nft) and its unit, not yet loaded (load_firewall).
write_firewall() {
  log "host firewall"
  put "$FIREWALL_PATH" 0600 < <(printf '%s' "$FIREWALL_RULES")
  nft -c -f "$FIREWALL_PATH" || die "nft rejects $FIREWALL_PATH"
  put /etc/systemd/system/clawstaff-firewall.service 0644 < <(printf '%s' "$FIREWALL_UNIT")
}

load_firewall() {
  systemctl daemon-reload
  systemctl enable clawstaff-firewall.service
  # reload, not restart: on a cage host a restart would also restart docker.service, which Requires= it.
  systemctl reload-or-restart clawstaff-firewall.service
}

# verify_host: what every hardened host holds, whatever else it runs.
verify_host() {
  nft list table inet "$NFT_TABLE" >/dev/null || die "firewall table inet $NFT_TABLE is not loaded"
  # Outputs are captured first: `cmd | grep -q` can fail under pipefail when grep exits early.
  local sshd_effective
  sshd_effective=$(sshd -T)
  grep -qx 'passwordauthentication no' <<<"$sshd_effective" || die "sshd still accepts passwords"
}

# put_files < list: install every file of a list hostconfig.pack_files wrote (as put does: CHANGED
# names those that changed): for each file, a line "file MODE LINES PATH", then its LINES lines.
put_files() {
  local marker mode lines path
  local -a body
  while read -r marker mode lines path; do
    [[ $marker == file && $mode =~ ^0[0-7]{3}$ && $lines =~ ^[0-9]+$ && $path == /* ]] \
      || die "a malformed file list: '$marker $mode $lines $path'"
    body=()
    if [ "$lines" -gt 0 ]; then mapfile -t -n "$lines" body; fi
    [ "${#body[@]}" -eq "$lines" ] || die "the file list ends inside $path"
    put "$path" "$mode" < <(if [ "$lines" -gt 0 ]; then printf '%s\n' "${body[@]}"; fi)
  done
}
