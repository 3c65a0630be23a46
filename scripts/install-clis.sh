#!/usr/bin/env bash
# Install the coding-agent CLIs that one-time jobs run (and the job tests drive) from the npm registry,
# each into its own prefix: ${CORAL_TOOLS_DIR:-<repo>/.tools}/<name>/node_modules/.bin/<command>.
#
#   scripts/install-clis.sh                 # claude, gemini and codex
#   scripts/install-clis.sh claude          # only some
#   CORAL_CLAUDE_VERSION=latest scripts/install-clis.sh claude   # another version than the pinned one
#
# Versions are pinned: the screens the server recognises (permission prompts) are those of these
# versions (tests/fixtures/screens). A CLI already installed at the wanted version is left alone.
# Needs Node.js >= 20 and npm. About 6 s (claude), 20 s (gemini), 20 s (codex) on a 2-core machine;
# 235 MB, 100 MB and 424 MB on disk.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${CORAL_TOOLS_DIR:-$PWD/.tools}
declare -A PACKAGE=([claude]=@anthropic-ai/claude-code [gemini]=@google/gemini-cli [codex]=@openai/codex)
declare -A VERSION=(
  [claude]=${CORAL_CLAUDE_VERSION:-2.1.197}
  [gemini]=${CORAL_GEMINI_VERSION:-0.61.0}
  [codex]=${CORAL_CODEX_VERSION:-0.171.0}
)

command -v npm >/dev/null 2>&1 || { echo "install-clis: npm is needed (Node.js >= 20)" >&2; exit 1; }

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(claude gemini codex)
for name in "${names[@]}"; do
  package=${PACKAGE[$name]:-}
  [ -n "$package" ] || { echo "install-clis: unknown CLI '$name' (claude, gemini, codex)" >&2; exit 2; }
  version=${VERSION[$name]}
  prefix=$TOOLS/$name
  manifest=$prefix/node_modules/$package/package.json
  if [ "$version" != latest ] && [ -f "$manifest" ] && grep -q "\"version\": \"$version\"" "$manifest" \
    && [ -x "$prefix/node_modules/.bin/$name" ]; then
    echo "install-clis: $name $version already in $prefix"
    continue
  fi
  mkdir -p "$prefix"
  started=$SECONDS
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "$package@$version" >/dev/null
  echo "install-clis: $name $("$prefix/node_modules/.bin/$name" --version 2>/dev/null | head -1)" \
    "in $prefix ($((SECONDS - started)) s)"
done
