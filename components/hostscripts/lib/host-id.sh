# shellcheck shell=bash
# userns-remap: container id U is host id (start of dockremap's range) + U. Computed on the host at run
# time, because only the host knows its ranges.
host_id() {  # host_id /etc/subuid|/etc/subgid U -> the host id that container id U maps to
  local file=$1 id=$2 line start count
  line=$(grep -m1 '^dockremap:' "$file" 2>/dev/null) \
    || die "userns-remap is not configured: $file has no dockremap range (dockerd --userns-remap=default creates it)"
  IFS=: read -r _ start count <<<"$line"
  [[ $start =~ ^[0-9]+$ && $count =~ ^[0-9]+$ ]] || die "malformed dockremap line in $file"
  (( id < count )) || die "container id $id is outside the dockremap range of $count ids in $file"
  echo $(( start + id ))
}
