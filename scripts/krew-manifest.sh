#!/usr/bin/env bash
# The krew plugin manifest of `kubectl templar` for a release: the archive's download address
# and its sha256. Usage: scripts/krew-manifest.sh VERSION ARCHIVE > templar.yaml
set -euo pipefail
version="$1"
archive="$2"
sha=$(sha256sum "$archive" | cut -d' ' -f1)
cat <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: templar
spec:
  version: v${version}
  homepage: https://github.com/templar-rs/templar-rs
  shortDescription: See and start templar training networks
  description: |
    kubectl templar status shows each TemplarValidator and its miners (window, loss,
    score, weight, ready, last error); kubectl templar logs follows a resource's node
    logs; kubectl templar devnet applies a quick-start network with fresh hotkeys.
  platforms:
    - selector:
        matchLabels: {os: linux, arch: amd64}
      uri: https://github.com/templar-rs/templar-rs/releases/download/v${version}/$(basename "$archive")
      sha256: ${sha}
      bin: kubectl-templar
YAML
