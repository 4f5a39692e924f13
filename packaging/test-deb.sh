#!/usr/bin/env bash
# Install the .deb with dpkg -i and check it as a site would have it: the binary answers, the
# packaged configuration passes `config check`, the user, data directory, model and ONNX Runtime
# are where the configuration says, the unit is hardened, and the node serves with the packaged
# configuration as the msnode user. Then purge it. Needs root (or passwordless sudo).
set -euo pipefail
deb=$1
sudo=$([ "$(id -u)" = 0 ] || echo "sudo -n")
fail() { echo "test-deb: $*" >&2; exit 1; }
# The test's own data directory goes with the package; a site's is kept on purge.
[ -e /var/lib/msnode ] && fail "/var/lib/msnode exists: not a machine to test the package on"
cleanup() { $sudo dpkg --purge msnode >/dev/null; $sudo rm -rf /var/lib/msnode "${config:-}"; }
trap cleanup EXIT
$sudo dpkg -i "$deb"
/usr/bin/msnode --version | tee /dev/stderr | grep -q "default model: msnode-compact" || fail "--version"
/usr/bin/msnode config check /etc/msnode/msnode.toml
getent passwd msnode >/dev/null || fail "no msnode user"
[ "$(stat -c %U /var/lib/msnode)" = msnode ] || fail "/var/lib/msnode is not owned by msnode"
[ "$(stat -c %G:%a /etc/msnode/msnode.toml)" = msnode:640 ] || fail "configuration permissions"
test -f /usr/share/msnode/models/compact/model.onnx || fail "no model"
test -f /usr/lib/msnode/libonnxruntime.so.1.31.1 || fail "no ONNX Runtime"
test -f /usr/share/doc/msnode/onnxruntime/LICENSE || fail "no ONNX Runtime licence"
unit=/lib/systemd/system/msnode.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/msnode.service
for line in ProtectSystem=strict NoNewPrivileges=true ReadWritePaths=/var/lib/msnode Restart=on-failure \
        "ExecStart=/usr/bin/msnode --config /etc/msnode/msnode.toml serve"; do
    grep -qx "$line" "$unit" || fail "$unit lacks $line"
done
# Serve as installed, as the msnode user, until readiness says the model and storage are fine.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port); dicom_port=$(free_port)
config=$(mktemp)
sed -e "s|^bind = \"127.0.0.1:8080\"|bind = \"127.0.0.1:$port\"|" -e "s|^port = 11112|port = $dicom_port|" \
    -e 's|^min_free_mb = .*|min_free_mb = 1|' /etc/msnode/msnode.toml > "$config"
chmod 644 "$config"
runuser=$( [ "$(id -u)" = 0 ] && echo "runuser -u msnode --" || echo "sudo -n -u msnode")
$runuser /usr/bin/msnode --config "$config" serve 2> /tmp/test-deb-serve.log & node=$!
ready=""
for _ in $(seq 100); do
    ready=$(python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$port/readyz').read().decode())" 2>/dev/null) && break
    sleep 0.2
done
kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true
echo "$ready"
grep -q "ok model: msnode-compact" <<<"$ready" || { cat /tmp/test-deb-serve.log >&2; fail "not ready as installed"; }
grep -q "ok storage" <<<"$ready" || fail "storage not ready"
echo "test-deb: OK"
