#!/usr/bin/env bash
# Build the agent of the previous release (the commit named in
# tests/compat/PREVIOUS_RELEASE) once, into a cache outside the clone, and
# print the binary's path as the last line. The compatibility test
# (cli/tests/compat_previous.rs) runs it against the coordinator of this tree.
#
# The release is named by a commit of main, not a tag: tags may not reach CI,
# a commit of main always does. Cached by commit: a second run builds nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
commit=$(tr -d '[:space:]' < tests/compat/PREVIOUS_RELEASE)
cache=${CONVOY_CACHE:-$HOME/.cache/convoy}/previous-agent/$commit
bin=$cache/convoy-agent
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  git fetch --quiet origin "$commit" >&2 || { echo "commit $commit is not in this clone" >&2; exit 1; }
fi
mkdir -p "$cache"
src=$(mktemp -d)
trap 'git worktree remove --force "$src" >/dev/null 2>&1 || rm -rf "$src"' EXIT
git worktree add --detach --quiet "$src" "$commit" >&2
# Its own target directory, kept beside the binary so a rebuild is incremental.
( cd "$src" && CARGO_TARGET_DIR="$cache/target" cargo build --quiet -p convoy-agent --bin convoy-agent >&2 )
cp "$cache/target/debug/convoy-agent" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$bin"
