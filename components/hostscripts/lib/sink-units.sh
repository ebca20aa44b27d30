# shellcheck shell=bash
# The audit sink's trail units (components/trailship.py SINK_UNITS): started from the files and
# certificates on disk, and checked. sink-bootstrap.sh restarts them when a file of the trail changed
# (once the certificates are there), sink-certs-install.sh when a certificate did.
# Header: TRAIL_DIR, SINK_UNITS (unit names, space-separated), UPLOAD_PORT (stunnel's, on the address
# the cage hosts reach), REMOTE_PORT (journal-remote's, on loopback only).

# sink_certificates_present: the CA, the sink's certificate and its key are in TRAIL_DIR.
sink_certificates_present() {
  [ -s "$TRAIL_DIR/ca.pem" ] && [ -s "$TRAIL_DIR/sink.pem" ] && [ -s "$TRAIL_DIR/sink.key" ]
}

# restart_sink_units: enable every trail unit and (re)start it with what is on disk now.
restart_sink_units() {
  local units unit
  read -ra units <<<"$SINK_UNITS"
  systemctl daemon-reload
  systemctl enable "${units[@]}"
  for unit in "${units[@]}"; do
    # A socket's service holds the socket it was passed: stop it too, so that a changed ListenStream=
    # takes effect (systemd starts the service again on the next connection).
    if [[ $unit == *.socket ]]; then systemctl stop "${unit%.socket}.service"; fi
  done
  systemctl restart "${units[@]}"
}

# verify_sink_units: every trail unit active, stunnel listening on UPLOAD_PORT, journal-remote on
# loopback's REMOTE_PORT and nowhere else.
verify_sink_units() {
  local units unit listening="" remote
  read -ra units <<<"$SINK_UNITS"
  for _ in $(seq 30); do
    listening=$(ss -Htln "sport = :$UPLOAD_PORT")
    [ -n "$listening" ] && break
    sleep 1
  done
  [ -n "$listening" ] || die "nothing listens on the trail's port $UPLOAD_PORT (stunnel): see journalctl -u ${units[*]}"
  for unit in "${units[@]}"; do
    systemctl is-active --quiet "$unit" || die "$unit is not active: see journalctl -u $unit"
  done
  remote=$(ss -Htln "sport = :$REMOTE_PORT" | awk '{ print $4 }' | sort -u)
  [ "$remote" = "127.0.0.1:$REMOTE_PORT" ] \
    || die "journal-remote must listen on 127.0.0.1:$REMOTE_PORT alone, not: ${remote:-nothing}"
}
