# shellcheck shell=bash
# Remove the cage's cgroup CG from every hierarchy (runc creates it in those we do not limit too).
# Refuses while a process is still inside; empty leftover children (a dead container's) are removed.
# Header: CLAW, PIECE, CG.

mapfile -t dirs < <(all_cgroup_dirs)
for d in "${dirs[@]}"; do
  n=$(find "$d" -name cgroup.procs -exec cat {} + | wc -l)
  (( n == 0 )) || die "cgroup $d still holds $n processes: a container of this cage is still running; remove the cage's containers first"
done
for d in "${dirs[@]}"; do
  find "$d" -depth -type d -exec rmdir {} + || die "cannot remove cgroup $d"
done
