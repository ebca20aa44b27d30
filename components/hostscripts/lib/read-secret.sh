# shellcheck shell=bash
# Reads one secret from stdin into the named variable without it touching argv, env or a file.
read_secret() {  # read_secret VAR BYTES: base64 text on stdin that decodes to BYTES bytes
  local -n out=$1
  IFS= read -r -d '' out || true
  out=${out//[$' \t\r\n']/}
  [[ -n $out ]] || die "nothing on stdin: the ${1//_/ } must arrive there"
  local n
  n=$(printf '%s' "$out" | base64 -d 2>/dev/null | wc -c) || die "the ${1//_/ } on stdin is not base64"
  [[ $n -eq $2 ]] || die "the ${1//_/ } on stdin must decode to $2 bytes"
}
