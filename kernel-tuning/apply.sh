#!/usr/bin/env bash
# Applies a sysctl profile: idempotent, checks every key exists before writing anything,
# fails loudly on any it cannot set, and prints what changed.
# Usage: ./apply.sh gateway.conf [--dry-run]
set -euo pipefail
profile=${1:?usage: apply.sh PROFILE [--dry-run]}
dry=${2:-}

keys=() values=()
while IFS= read -r line; do
  line=${line%%#*}
  [[ -z ${line//[[:space:]]/} ]] && continue
  key=$(echo "${line%%=*}" | xargs)
  value=$(echo "${line#*=}" | xargs)
  keys+=("$key") values+=("$value")
done < "$profile"

missing=0
for key in "${keys[@]}"; do
  if [[ ! -e /proc/sys/${key//.//} ]]; then
    echo "apply.sh: $key does not exist on this kernel (module not loaded?)" >&2
    missing=1
  fi
done
[[ $missing -eq 0 ]] || { echo "apply.sh: nothing applied" >&2; exit 1; }

failed=0
for i in "${!keys[@]}"; do
  key=${keys[$i]} want=${values[$i]}
  have=$(sysctl -n "$key" | xargs)
  if [[ "$have" == "$want" ]]; then
    echo "ok       $key = $want"
  elif [[ $dry == --dry-run ]]; then
    echo "would    $key: $have -> $want"
  elif sysctl -q -w "$key=$want" && [[ "$(sysctl -n "$key" | xargs)" == "$want" ]]; then
    echo "changed  $key: $have -> $want"
  else
    echo "FAILED   $key: could not set $want (still $(sysctl -n "$key" | xargs))" >&2
    failed=1
  fi
done
exit $failed
