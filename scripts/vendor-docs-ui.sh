#!/usr/bin/env bash
# Re-creates the Swagger UI files that order-api embeds for its API docs page
# (GET /api/docs/) from the npm registry: `npm ci` of the exact version pinned
# in order-api/assets/docs/npm/package-lock.json, in a scratch folder, then
# copies the browser bundle, its stylesheet and their licence files into
# order-api/assets/docs/. The copies are byte-for-byte the package's files.
#
# Usage: scripts/vendor-docs-ui.sh           # refresh the committed files
#        scripts/vendor-docs-ui.sh --check   # fail if they differ from the package
# To upgrade: change the version in order-api/assets/docs/npm/package.json, run
#   (cd order-api/assets/docs/npm && npm install --package-lock-only --ignore-scripts)
# then this script, then scripts/browser-test.sh.
# Needs: node and npm.
set -euo pipefail

say() { printf '==> %s\n' "$*"; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${script_dir}/.."

check=false
case "${1:-}" in
    "") ;;
    --check) check=true ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

assets=order-api/assets/docs
# Package file → committed name (the licence files get the package's name).
files=(
    "swagger-ui-bundle.js:swagger-ui-bundle.js"
    "swagger-ui-bundle.js.LICENSE.txt:swagger-ui-bundle.js.LICENSE.txt"
    "swagger-ui.css:swagger-ui.css"
    "index.css:index.css"
    "LICENSE:swagger-ui-dist.LICENSE"
    "NOTICE:swagger-ui-dist.NOTICE"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "${assets}/npm/package.json" "${assets}/npm/package-lock.json" "$work/"
say "npm ci (swagger-ui-dist as pinned in ${assets}/npm/package-lock.json)"
# --ignore-scripts: swagger-ui-dist depends on @scarf/scarf, whose install
# script reports the download to a third party; nothing here needs it.
(cd "$work" && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

package="$work/node_modules/swagger-ui-dist"
pinned=$(node -p 'require(process.argv[1]).dependencies["swagger-ui-dist"]' "$PWD/${assets}/npm/package.json")
installed=$(node -p 'require(process.argv[1]).version' "$package/package.json")
if [[ "$pinned" != "$installed" ]]; then
    echo "package.json pins swagger-ui-dist ${pinned} but npm ci installed ${installed}: update package-lock.json" >&2
    exit 1
fi

differ=0
for pair in "${files[@]}"; do
    from="$package/${pair%%:*}"
    to="${assets}/${pair#*:}"
    if $check; then
        if ! cmp -s "$from" "$to"; then
            echo "differs from swagger-ui-dist ${installed}: ${to}" >&2
            differ=1
        fi
    else
        cp "$from" "$to"
    fi
done
if $check; then
    [[ $differ -eq 0 ]] || exit 1
    say "${assets} holds swagger-ui-dist ${installed} unchanged"
else
    say "copied swagger-ui-dist ${installed} into ${assets}:"
    (cd "$assets" && ls -l "${files[@]#*:}")
fi
