# shellcheck shell=bash
# Remove the cage's cgroup CG from every hierarchy (runc creates it in those we do not limit too), and
# for DRIVER systemd the slice unit SLICE with its drop-ins. Refuses while a process is still inside;
# empty leftover children (a dead container's) are removed.
# Header: CLAW, PIECE, DRIVER, CG, SLICE.

mapfile -t dirs < <(all_cgroup_dirs)
for d in "${dirs[@]}"; do
  n=$(find "$d" -name cgroup.procs -exec cat {} + | wc -l)
  (( n == 0 )) || die "cgroup $d still holds $n processes: a container of this cage is still running; remove the cage's containers first"
done
if [[ $DRIVER == systemd && -d /run/systemd/system ]]; then
  # Nothing runs in it (checked above), so stopping the slice stops nothing but the slice.
  systemctl stop "$SLICE" || die "systemd cannot stop $SLICE"
  rm -f -- "/etc/systemd/system/$SLICE"
  for dropins in "/etc/systemd/system/$SLICE.d" "/run/systemd/system.control/$SLICE.d" \
    "/etc/systemd/system.control/$SLICE.d"; do
    rm -f -- "$dropins"/*.conf
    [[ ! -d $dropins ]] || rmdir -- "$dropins"
  done
  systemctl daemon-reload
  mapfile -t dirs < <(all_cgroup_dirs)
fi
for d in "${dirs[@]}"; do
  find "$d" -depth -type d -exec rmdir {} + || die "cannot remove cgroup $d"
done
