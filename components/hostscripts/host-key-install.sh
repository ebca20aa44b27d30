# shellcheck shell=bash
# Install the derived SSH host key, read from stdin (never inlined), at HOST_KEY_PATH and reload sshd.
# Refuses a private key whose public half is not PUBLIC_KEY (the type and base64 of the key Pulumi
# pins); PUBLIC_KEY_LINE is the whole public line written beside it, FINGERPRINT names it in messages.
# AFTER_CLOUD_INIT=1 (a cloud server's first contact): wait until cloud-init is done first.
# Header: AFTER_CLOUD_INIT, HOST_KEY_PATH, PUBLIC_KEY, PUBLIC_KEY_LINE, FINGERPRINT.
umask 077
if [ "$AFTER_CLOUD_INIT" = 1 ] && command -v cloud-init >/dev/null; then
  # Its status may report the bootstrap's failure; the bootstrap command that follows re-runs it.
  cloud-init status --wait >/dev/null 2>&1 || echo "clawstaff: cloud-init ended with errors" >&2
fi
tmp=$(mktemp "$HOST_KEY_PATH.new.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat >"$tmp"
[ "$(ssh-keygen -y -f "$tmp" | cut -d' ' -f1,2)" = "$PUBLIC_KEY" ] \
  || { echo "clawstaff: the key on stdin is not $FINGERPRINT" >&2; exit 1; }
if [ -f "$HOST_KEY_PATH" ] && cmp -s "$tmp" "$HOST_KEY_PATH"; then
  echo "clawstaff: host key $FINGERPRINT already installed" >&2
  exit 0
fi
install -m 0600 -o root -g root "$tmp" "$HOST_KEY_PATH"
printf '%s\n' "$PUBLIC_KEY_LINE" >"$HOST_KEY_PATH.pub"
chmod 0644 "$HOST_KEY_PATH.pub"
sshd -t
systemctl reload-or-restart ssh.service
echo "clawstaff: host key $FINGERPRINT installed" >&2
