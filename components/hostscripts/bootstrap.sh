# shellcheck shell=bash
# Bring a Debian 13 (or 12) cage host to the hardened state; re-running it repairs drift. Files are only
# rewritten, and services only restarted, when their content changes. The same script runs on a cloud
# server (from cloud-init) and on an adopted dedicated server (over SSH); it expects the derived host key
# in place. Every file it installs arrives rendered in a header variable, never built here. The steps
# every host shares (lib/host-common.sh, rendered before this file) are its functions.
# Header (readonly): HOST_NAME, ENGINE (docker.io: Debian's own package, DOCKER_VERSION its lowest
# accepted version; docker-ce: Docker's repository, DOCKER_VERSION the exact pin), DOCKER_VERSION, DOCKER_KEY_FINGERPRINT, DOCKER_REPO_URL, DEBIAN_CODENAME,
# NFT_TABLE, FIREWALL_PATH, SYSCTL_PATH, SSHD_DROPIN_PATH, HOST_KEY_PATH, AUTHORIZED_KEYS, SYSCTL_CONF,
# SSHD_CONFIG, AUTO_UPGRADES, UNATTENDED_UPGRADES, AUDIT_RULES, AUDITD_CONF, FIREWALL_RULES, FIREWALL_UNIT, DOCKER_UNIT_DROPIN,
# RUNSC_PACKAGE (gVisor's package when a claw of the host runs under it, else empty), RUNSC_PATH, RUNSC_RUNTIME,
# DAEMON_JSON.
readonly DOCKER_KEYRING=/etc/apt/keyrings/docker.asc

# docker_key_ok FILE: FILE holds exactly one primary key, Docker's, by full fingerprint.
docker_key_ok() {
  [ -s "$1" ] || return 1
  local primaries
  primaries=$(gpg --batch --show-keys --with-colons "$1" 2>/dev/null \
    | awk -F: '$1 == "pub" { want = 1; next } want && $1 == "fpr" { print $10; want = 0 }')
  [ "$primaries" = "$DOCKER_KEY_FINGERPRINT" ]
}

require_system
# Socket buffers are charged to a cage's memory only on the unified hierarchy: on cgroup v1 a claw's
# unread TCP buffers sit outside every limit (docs/attack-findings.md, finding 2).
[ -f /sys/fs/cgroup/cgroup.controllers ] \
  || die "needs the unified cgroup hierarchy (cgroup v2): on cgroup v1 a cage's socket buffers escape its memory limit"

set_host_name
install_admin_keys

log "swap off"
swapoff -a
sed -E -i '/^[^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]/ s/^/#clawstaff: /' /etc/fstab
systemctl mask swap.target >/dev/null

log "kernel modules and sysctls"
put /etc/modules-load.d/clawstaff.conf 0644 <<<"br_netfilter"
modprobe br_netfilter
install_sysctls
install_sshd_config

log "packages and automatic security updates"
apt-get update -q
# The audit daemon's files first, so that its very first start already writes the cages' format;
# confold keeps them over the package's own (also on every later upgrade, as unattended-upgrades does).
put /etc/audit/auditd.conf 0640 < <(printf '%s' "$AUDITD_CONF")
put /etc/audit/rules.d/audit.rules 0640 < <(printf '%s' "$AUDIT_RULES")
install_packages ca-certificates curl gnupg nftables unattended-upgrades auditd
install_auto_upgrades

log "kernel audit (each cage's audit command loads its rules; auditd writes the records)"
systemctl enable --now auditd.service
# A changed configuration is re-read on SIGHUP (auditd refuses a manual stop, so no restart).
if changed /etc/audit/auditd.conf; then systemctl kill --signal=HUP auditd.service; fi
# audit-rules.service loaded rules.d when the package was installed; this load is the same file (for
# a re-run, and a changed file). Its -i makes a rule the kernel already holds no error, so augenrules
# succeeds either way and says "error in line N" of each such rule: what counts is what the kernel holds.
augenrules --load >/dev/null 2>&1 || true
audit_held=$(auditctl -l)
while IFS= read -r rule; do
  [[ $rule == "-a "* ]] || continue
  grep -qxF -- "$rule" <<<"$audit_held" || die "the kernel does not hold the rule '$rule' of rules.d: $audit_held"
done <<<"$AUDIT_RULES"

write_firewall
put /etc/systemd/system/docker.service.d/10-clawstaff.conf 0644 < <(printf '%s' "$DOCKER_UNIT_DROPIN")
load_firewall

if [ -n "$RUNSC_PACKAGE" ]; then
  # gVisor from Debian's own package (security updates with the system's); daemon.json registers it.
  log "gVisor ($RUNSC_PACKAGE)"
  if ! dpkg-query -W -f='${Status}' "$RUNSC_PACKAGE" 2>/dev/null | grep -q 'install ok installed'; then
    apt-get install -y -q --no-install-recommends "$RUNSC_PACKAGE"
  fi
  [ -x "$RUNSC_PATH" ] || die "$RUNSC_PACKAGE is installed but $RUNSC_PATH is not there"
  "$RUNSC_PATH" --version >/dev/null || die "$RUNSC_PATH does not run"
fi

log "Docker Engine ($ENGINE $DOCKER_VERSION)"
# daemon.json first, so that the engine's very first start is already hardened.
put /etc/docker/daemon.json 0644 < <(printf '%s' "$DAEMON_JSON")
case $ENGINE in
docker.io)
  # Debian's own engine: security updates come with the system's (unattended-upgrades).
  if ! dpkg-query -W -f='${Status}' docker.io 2>/dev/null | grep -q 'install ok installed'; then
    apt-get install -y -q --no-install-recommends docker.io docker-cli
  fi
  installed=$(dpkg-query -W -f='${Version}' docker.io)
  dpkg --compare-versions "$installed" ge "$DOCKER_VERSION" \
    || die "docker.io $installed is older than $DOCKER_VERSION (the CVE-2024-29018 fix)"
  ;;
docker-ce)
  install -d -m 0755 /etc/apt/keyrings
  if ! docker_key_ok "$DOCKER_KEYRING"; then
    key_tmp=$(mktemp)
    curl -fsSL --proto '=https' --tlsv1.2 -o "$key_tmp" "$DOCKER_REPO_URL/gpg"
    docker_key_ok "$key_tmp" || { rm -f "$key_tmp"; die "Docker's repository key does not have fingerprint $DOCKER_KEY_FINGERPRINT"; }
    install -m 0644 "$key_tmp" "$DOCKER_KEYRING"
    rm -f "$key_tmp"
  fi
  put /etc/apt/sources.list.d/docker.list 0644 <<<"deb [arch=$(dpkg --print-architecture) signed-by=$DOCKER_KEYRING] \
$DOCKER_REPO_URL $DEBIAN_CODENAME stable"
  if [ "$(dpkg-query -W -f='${Version}' docker-ce 2>/dev/null || true)" != "$DOCKER_VERSION" ]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends --allow-change-held-packages \
      "docker-ce=$DOCKER_VERSION" "docker-ce-cli=$DOCKER_VERSION" containerd.io
  fi
  apt-mark hold docker-ce docker-ce-cli >/dev/null
  ;;
*) die "unknown engine source $ENGINE" ;;
esac
systemctl daemon-reload
systemctl enable docker.service
if changed /etc/docker/daemon.json || changed /etc/systemd/system/docker.service.d/10-clawstaff.conf; then
  systemctl restart docker.service
else
  systemctl start docker.service
fi

log "verify"
verify_host
for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
# Outputs are captured first: `cmd | grep -q` can fail under pipefail when grep exits early.
security=$(docker info --format '{{json .SecurityOptions}} {{.LiveRestoreEnabled}}')
[[ $security == *name=userns*" true" ]] || die "docker runs without userns-remap or live-restore: $security"
if [ -n "$RUNSC_PACKAGE" ]; then
  engine_runtimes=$(docker info --format '{{json .Runtimes}}')
  [[ $engine_runtimes == *"\"$RUNSC_RUNTIME\""* ]] || die "the engine has not registered gVisor ($RUNSC_RUNTIME): $engine_runtimes"
fi
[ -z "$(swapon --show --noheadings)" ] || die "swap is still active"
audit_status=$(auditctl -s)
[[ $(awk '$1 == "pid" { print $2 }' <<<"$audit_status") =~ ^[1-9][0-9]*$ ]] || die "auditd is not running: $audit_status"
log "host $HOST_NAME is hardened"
