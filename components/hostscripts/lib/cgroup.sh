# shellcheck shell=bash
# The cgroup mounts of this host: v2 unified, or v1 hierarchies (hybrid hosts have both kinds). CG is
# the cage's cgroup, relative to every hierarchy's mount point.
cgroup_v2() { [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; }
v1_mount() {  # v1_mount CONTROLLER -> the mount point of the v1 hierarchy that has it
  awk -v c="$1" '$3 == "cgroup" && index("," $4 ",", "," c ",") { print $2; exit }' /proc/self/mounts
}
all_cgroup_dirs() {  # this cage's cgroup in every hierarchy where it exists
  local m
  awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts | while read -r m; do
    if [[ -d $m/$CG ]]; then printf '%s\n' "$m/$CG"; fi
  done
}
swap_active() { [[ $(awk 'NR > 1' /proc/swaps | wc -l) -gt 0 ]]; }
