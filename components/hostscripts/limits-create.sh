# shellcheck shell=bash
# Create the cage's parent cgroup CG and write the whole cage's hard limits (claw + proxy): PIDS,
# MEMORY (memory+swap) and CPU_QUOTA per CPU_PERIOD microseconds. Re-running it applies changed limits.
# Header: CLAW, PIECE, CG, CGROUP_ROOT, PIDS, MEMORY, CPU_QUOTA, CPU_PERIOD.

put() { printf '%s\n' "$2" > "$1" || die "cannot write $2 to $1"; }

if cgroup_v2; then
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
