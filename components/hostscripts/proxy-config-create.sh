# shellcheck shell=bash
# Install the proxy's rendered squid.conf (text on stdin) in DIR, below ROOT, atomically and
# world-readable (it holds no secret).
# Header: CLAW, PIECE, ROOT, DIR.

umask 022
install -d -m 0755 "$ROOT" "$DIR"
tmp=$(mktemp "$DIR/.squid.conf.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
[[ -s $tmp ]] || die "nothing on stdin: the proxy configuration must arrive there"
chmod 0444 "$tmp"
mv -f "$tmp" "$DIR/squid.conf"
trap - EXIT
