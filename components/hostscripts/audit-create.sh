# shellcheck shell=bash
# Load the cage's kernel audit rules, all tagged KEY, replacing any it had: RULES_<ARCH> (one rule of
# auditctl arguments per line, rendered by components/cagehost.audit_rules) for this host's
# architecture, with UID_TOKEN replaced by the host uid that container uid CAGE_UID maps to. Refuses
# rather than let the cage run unaudited. VOLUME: the cage's volume directory, when it has one (its
# reads are audited, so it must be mounted).
# Header: CLAW, PIECE, KEY, CAGE_UID, SUBUID_FILE, VOLUME, UID_TOKEN, RULES_X86_64, RULES_AARCH64.

command -v auditctl >/dev/null \
  || die "auditctl is not installed (Debian's auditd package): the cage would run unaudited"
uid=$(host_id "$SUBUID_FILE" "$CAGE_UID")
case $(uname -m) in
x86_64) rules=$RULES_X86_64 ;;
aarch64) rules=$RULES_AARCH64 ;;
*) die "no audit rules for architecture $(uname -m) (x86_64 and aarch64 have them)" ;;
esac
status=$(auditctl -s 2>&1) || die "the kernel's audit subsystem does not answer: $status"
enabled=$(awk '$1 == "enabled" { print $2 }' <<<"$status")
daemon=$(awk '$1 == "pid" { print $2 }' <<<"$status")
[[ $enabled != 2 ]] || die "the audit rules are locked until the next reboot (enabled 2): cannot load the cage's rules"
[[ -n $daemon && $daemon != 0 ]] \
  || die "no audit daemon is running (auditd): the cage's records would reach no log"
[[ $enabled == 1 ]] || auditctl -e 1 >/dev/null || die "cannot enable the kernel's audit subsystem"
if [[ -n $VOLUME ]]; then
  mountpoint -q "${VOLUME%/*}" || die "the cage's volume is not mounted at ${VOLUME%/*}: its reads could not be audited"
fi

# Replace: a re-run (an input changed) drops the old rules and loads the new ones.
auditctl -D -k "$KEY" >/dev/null || die "cannot remove the cage's previous audit rules"
want=0
while IFS= read -r line; do
  [[ -n $line ]] || continue
  read -ra rule <<<"${line//"$UID_TOKEN"/$uid}"
  out=$(auditctl "${rule[@]}" 2>&1) || die "auditctl refused the rule '${rule[*]}': $out"
  want=$(( want + 1 ))
done <<<"$rules"
loaded=$(rules_held "$KEY")
(( loaded == want )) || die "the kernel holds $loaded audit rules with key $KEY, not the $want loaded"
