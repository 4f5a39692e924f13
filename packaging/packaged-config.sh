#!/bin/sh
# The example configuration with the paths of an installed msnode (the .deb and the Docker
# images): data in /var/lib/msnode, the models in /usr/share/msnode, ONNX Runtime in /usr/lib/msnode.
set -eu
sed -e 's|^data_dir = .*|data_dir = "/var/lib/msnode"|' \
    -e 's|^dir = "models/realbg"|dir = "/usr/share/msnode/models/realbg"|' \
    -e 's|^single_visit_dir = "models/single-visit"|single_visit_dir = "/usr/share/msnode/models/single-visit"|' \
    -e 's|^# onnxruntime_library = .*|onnxruntime_library = "/usr/lib/msnode/libonnxruntime.so.1.31.1"|' \
    "$1"
