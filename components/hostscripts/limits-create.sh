# shellcheck shell=bash
# Create the cage's parent cgroup CG and write the whole cage's hard limits (claw + proxy): PIDS,
# MEMORY (memory+swap) and CPU_QUOTA per CPU_PERIOD microseconds. Re-running it applies changed limits.
# DRIVER systemd: CG is the slice unit SLICE, written to /etc/systemd/system (it holds its limits again
# after a reboot) and applied now; DRIVER cgroupfs: CG is a cgroup this script makes in every hierarchy.
# Header: CLAW, PIECE, DRIVER, CG, SLICE, IO_WEIGHT, CGROUP_ROOT, PIDS, MEMORY, CPU_QUOTA, CPU_PERIOD.

put() { printf '%s\n' "$2" > "$1" || die "cannot write $2 to $1"; }
expect() {  # expect FILE VALUE: the kernel holds VALUE in FILE
  local got
  got=$(cat "$1" 2>/dev/null) || die "cannot read $1"
  [[ $got == "$2" ]] || die "$1 holds '$got', not '$2': systemd did not apply the cage's limits"
}

if [[ $DRIVER == systemd ]]; then
  [[ -d /run/systemd/system ]] || die "the systemd cgroup driver needs systemd as init, and this host has none"
  cgroup_v2 || die "the systemd cgroup driver needs the unified cgroup hierarchy (cgroup v2)"
  # With the cgroupfs driver, Docker would take the slice's name as a cgroup of its own beside the
  # slice: the containers would run outside these limits. Refuse instead.
  engine=$(docker info --format '{{.CgroupDriver}}' 2>/dev/null) \
    || die "cannot ask the Docker engine for its cgroup driver (docker info failed)"
  [[ $engine == systemd ]] \
    || die "the Docker engine uses the '$engine' cgroup driver, not systemd: the cage's containers would run outside its slice"
  (( CPU_QUOTA * 100 % CPU_PERIOD == 0 )) || die "CPU_QUOTA $CPU_QUOTA is not a whole percent of $CPU_PERIOD"
  properties=(
    "TasksMax=$PIDS"
    "MemoryMax=$MEMORY"
    "MemorySwapMax=0"
    "CPUQuota=$(( CPU_QUOTA * 100 / CPU_PERIOD ))%"
    "CPUQuotaPeriodSec=${CPU_PERIOD}us"
    "IOWeight=$IO_WEIGHT"
  )
  unit=/etc/systemd/system/$SLICE
  tmp=$(mktemp "$unit.XXXXXX")
  trap 'rm -f -- "$tmp"' EXIT
  {
    printf '# clawstaff: the whole-cage limits of cage %s (claw and proxy). Written by its limits script.\n' "$CLAW"
    printf '[Unit]\nDescription=ClawCage %s\n[Slice]\n' "$CLAW"
    printf '%s\n' "${properties[@]}"
  } > "$tmp"
  chmod 0644 "$tmp"
  mv -f -- "$tmp" "$unit"
  systemctl daemon-reload
  systemctl start "$SLICE"
  # Applied now as well: a reload alone does not promise to rewrite a running slice's cgroup.
  systemctl set-property --runtime "$SLICE" "${properties[@]}"
  d=/sys/fs/cgroup/$CG
  [[ -d $d ]] || die "systemd started $SLICE but its cgroup $d does not exist"
  chmod 0755 "$d" "${d%/*}"  # see below: a container's remapped root must traverse its ancestors
  expect "$d/pids.max" "$PIDS"
  expect "$d/memory.max" "$MEMORY"
  expect "$d/memory.swap.max" 0
  expect "$d/cpu.max" "$CPU_QUOTA $CPU_PERIOD"
elif cgroup_v2; then
  root=/sys/fs/cgroup
  for c in cpu memory pids; do
    grep -qw "$c" "$root/cgroup.controllers" || die "the cgroup v2 controller $c is not available on this host"
  done
  # Controllers must be enabled in every ancestor's subtree_control to be usable below it, including
  # in the cage's own cgroup, where the containers' cgroups are created. Only missing ones are
  # written: systemd has usually enabled them at the root already.
  enable() {
    local c
    for c in cpu memory pids; do
      grep -qw "$c" "$1/cgroup.subtree_control" || put "$1/cgroup.subtree_control" "+$c"
    done
  }
  enable "$root"
  # 0755, not the scripts' umask of 077: a container's (remapped, unprivileged) root must traverse its
  # ancestors to mount its own cgroup namespace (otherwise runc fails: "mounting cgroup ... permission
  # denied"). The directories hold no secret; only root writes their limit files.
  (umask 022 && mkdir -p "$root/$CGROUP_ROOT" "$root/$CG")
  chmod 0755 "$root/$CGROUP_ROOT" "$root/$CG"
  enable "$root/$CGROUP_ROOT"
  enable "$root/$CG"
  d=$root/$CG
  put "$d/pids.max" "$PIDS"
  put "$d/memory.max" "$MEMORY"
  if [[ -e $d/memory.swap.max ]]; then
    put "$d/memory.swap.max" 0
  elif swap_active; then
    die "swap is on but swap accounting is off (no memory.swap.max): cannot cap memory+swap"
  fi
  put "$d/cpu.max" "$CPU_QUOTA $CPU_PERIOD"
else
  for c in pids memory cpu; do
    [[ -n $(v1_mount "$c") ]] || die "no cgroup v1 hierarchy has the $c controller on this host"
    (umask 022 && mkdir -p "$(v1_mount "$c")/$CG")
  done
  d=$(v1_mount pids)/$CG
  put "$d/pids.max" "$PIDS"
  d=$(v1_mount memory)/$CG
  if [[ -e $d/memory.memsw.limit_in_bytes ]]; then
    # memsw must stay >= the memory limit at every step: raise it first when growing.
    if (( MEMORY > $(cat "$d/memory.memsw.limit_in_bytes") )); then
      put "$d/memory.memsw.limit_in_bytes" "$MEMORY"
      put "$d/memory.limit_in_bytes" "$MEMORY"
    else
      put "$d/memory.limit_in_bytes" "$MEMORY"
      put "$d/memory.memsw.limit_in_bytes" "$MEMORY"
    fi
  else
    put "$d/memory.limit_in_bytes" "$MEMORY"
    ! swap_active || die "swap is on but swap accounting is off (no memory.memsw.*): cannot cap memory+swap"
  fi
  d=$(v1_mount cpu)/$CG
  put "$d/cpu.cfs_period_us" "$CPU_PERIOD"
  put "$d/cpu.cfs_quota_us" "$CPU_QUOTA"
fi
