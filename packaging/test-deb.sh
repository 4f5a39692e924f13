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
cleanup() { $sudo dpkg --purge msnode >/dev/null; $sudo rm -rf /var/lib/msnode; }
trap cleanup EXIT
$sudo dpkg -i "$deb"
/usr/bin/msnode --version | tee /dev/stderr | grep -q "default model: msnode-realbg" || fail "--version"
/usr/bin/msnode config check /etc/msnode/msnode.toml
getent passwd msnode >/dev/null || fail "no msnode user"
[ "$(stat -c %U /var/lib/msnode)" = msnode ] || fail "/var/lib/msnode is not owned by msnode"
[ "$(stat -c %G:%a /etc/msnode/msnode.toml)" = msnode:640 ] || fail "configuration permissions"
test -f /usr/share/msnode/models/realbg/model.onnx || fail "no model"
test -f /usr/share/msnode/models/realbg-int8/model.onnx || fail "no int8 model"
test -f /usr/share/msnode/models/single-visit/model.onnx || fail "no single-visit model"
test -f /usr/lib/msnode/libonnxruntime.so.1.31.1 || fail "no ONNX Runtime"
test -f /usr/share/doc/msnode/onnxruntime/LICENSE || fail "no ONNX Runtime licence"
unit=/lib/systemd/system/msnode.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/msnode.service
for line in ProtectSystem=strict NoNewPrivileges=true ReadWritePaths=/var/lib/msnode Restart=on-failure \
        "ExecStart=/usr/bin/msnode --config /etc/msnode/msnode.toml serve"; do
    grep -qx "$line" "$unit" || fail "$unit lacks $line"
done
# Serve as installed, as the msnode user, until readiness says the model and storage are fine.
runuser=$( [ "$(id -u)" = 0 ] && echo "runuser -u msnode --" || echo "sudo -n -u msnode")
# shellcheck disable=SC2086 # the prefix is words
"$(dirname "$0")/check-ready.sh" /usr/bin/msnode /etc/msnode/msnode.toml $runuser
echo "test-deb: OK"
