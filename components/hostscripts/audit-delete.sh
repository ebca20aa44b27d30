# shellcheck shell=bash
# Remove the cage's kernel audit rules (all tagged KEY). The records they made stay in the host's audit
# log: the trail outlives the cage. Absent rules (or no audit tools at all: nothing was loaded) are fine.
# Header: CLAW, PIECE, KEY.

command -v auditctl >/dev/null || exit 0
auditctl -D -k "$KEY" >/dev/null || die "cannot remove the cage's audit rules (key $KEY)"
left=$(rules_held "$KEY")
(( left == 0 )) || die "the kernel still holds $left audit rules with key $KEY"
