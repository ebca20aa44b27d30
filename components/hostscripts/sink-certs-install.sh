# shellcheck shell=bash
# Install the audit sink's trail certificates, read from stdin (never inlined): the stack's trail CA,
# the sink's certificate and the sink's key, each one PEM block, in that order. Refuses them unless the
# CA signed the certificate for a TLS server at ADDRESS (the address the cage hosts reach) and the key
# is the certificate's; then puts them in TRAIL_DIR (the key 0600, root's) and (re)starts the trail's
# units (lib/sink-units.sh), which then must be up.
# Header: TRAIL_DIR, ADDRESS, and what lib/sink-units.sh reads.
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk -v dir="$tmp" 'BEGIN { split("ca.pem sink.pem sink.key", names, " "); n = 1 }
  n > 3 { extra = 1; next }
  { print > (dir "/" names[n]) }
  /^-----END / { n++ }
  END { exit (extra || n != 4) }' || die "stdin holds other than three PEM blocks (CA, certificate, key)"
openssl verify -purpose sslserver -verify_ip "$ADDRESS" -CAfile "$tmp/ca.pem" "$tmp/sink.pem" >/dev/null \
  || die "the certificate on stdin is not the CA's, or not a server certificate for $ADDRESS"
[ "$(openssl x509 -noout -pubkey -in "$tmp/sink.pem")" = "$(openssl pkey -pubout -in "$tmp/sink.key")" ] \
  || die "the key on stdin is not the certificate's"
install -d -m 0750 -o root -g root "$TRAIL_DIR"
put "$TRAIL_DIR/ca.pem" 0644 <"$tmp/ca.pem"
put "$TRAIL_DIR/sink.pem" 0644 <"$tmp/sink.pem"
put "$TRAIL_DIR/sink.key" 0600 <"$tmp/sink.key"
restart_sink_units
verify_sink_units
log "the trail's certificates are installed; the sink takes uploads on $ADDRESS port $UPLOAD_PORT"
