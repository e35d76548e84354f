#!/usr/bin/env bash
# Copies deploy/config/*.toml into deploy/k8s/config/, where kustomize's load
# restrictor can read them. crates/writ-cli/tests/deploy.rs fails when the
# copies drift from the originals; run this after changing a config.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/../config"
dst="$here/config"
mkdir -p "$dst"
# Copies whose original is gone would ship a config nobody maintains.
for f in "$dst"/*.toml; do
  [[ -e "$f" ]] || continue
  [[ -e "$src/$(basename "$f")" ]] || { rm -v "$f"; }
done
for f in "$src"/*.toml; do
  cp "$f" "$dst/"
  echo "synced $(basename "$f")"
done
