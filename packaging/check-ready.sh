#!/usr/bin/env bash
# Serve with an installed layout's configuration (its ports moved to free ones and a 1 MiB storage
# reserve) until /readyz says the model and the storage are fine; print the answer.
#   check-ready.sh MSNODE CONFIG [COMMAND PREFIX...]   (e.g. runuser -u msnode --)
# PROBE, when set, is the program that asks /readyz (MSNODE_CONFIG names the moved configuration).
set -euo pipefail
msnode=$1 installed_config=$2
shift 2
fail() { echo "check-ready: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
admin_port=$(free_port) dicom_port=$(free_port)
config=$(mktemp --suffix=.toml) log=$(mktemp)
trap 'rm -f "$config" "$log"' EXIT
sed -e "s|^bind = \"127.0.0.1:8080\"|bind = \"127.0.0.1:$admin_port\"|" -e "s|^port = 11112|port = $dicom_port|" \
    -e 's|^min_free_mb = .*|min_free_mb = 1|' "$installed_config" > "$config"
chmod 644 "$config"
export MSNODE_CONFIG=$config
ask_ready() {
    if [ -n "${PROBE:-}" ]; then
        "$PROBE"
    else
        python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$admin_port/readyz').read().decode())"
    fi
}
"$@" "$msnode" --config "$config" serve 2> "$log" & node=$!
ready=""
for _ in $(seq 100); do
    ready=$(ask_ready 2>/dev/null) && break
    sleep 0.2
done
kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true
echo "$ready"
grep -q "ok model: msnode-realbg" <<<"$ready" || { cat "$log" >&2; fail "not ready"; }
grep -q "ok single_visit_model: msnode-single-visit" <<<"$ready" || { cat "$log" >&2; fail "single-visit model not ready"; }
grep -q "ok storage" <<<"$ready" || fail "storage not ready"
