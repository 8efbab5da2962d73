#!/usr/bin/env bash
# Re-creates the third-party browser files that order-api embeds in the pages
# it serves, from the npm registry. Each page has a folder
# order-api/assets/<page>/ with an npm/ folder pinning one package
# (package.json + package-lock.json); package.json's "vendor" key names the
# package and maps its files to the names committed beside the page:
#   docs     GET /api/docs/   swagger-ui-dist (Swagger UI)
#   console  GET /console/    uplot (the console's chart)
# For each: `npm ci` of the exact pinned version in a scratch folder, then a
# byte-for-byte copy of the mapped files (licences included).
#
# Usage: scripts/vendor-ui.sh [--check] [PAGE…]   (default: every page)
#   --check  copy nothing; fail if a committed file differs from the package
# To upgrade: change the version in order-api/assets/<page>/npm/package.json, run
#   (cd order-api/assets/<page>/npm && npm install --package-lock-only --ignore-scripts)
# then this script, then scripts/browser-test.sh.
# Needs: node and npm.
set -euo pipefail

say() { printf '==> %s\n' "$*"; }

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "${script_dir}/.."

check=false
pages=()
for arg in "$@"; do
    case "$arg" in
        --check) check=true ;;
        -*) echo "usage: $0 [--check] [PAGE…]" >&2; exit 2 ;;
        *) pages+=("$arg") ;;
    esac
done
if [[ ${#pages[@]} -eq 0 ]]; then
    for manifest in order-api/assets/*/npm/package.json; do
        pages+=("$(basename "$(dirname "$(dirname "$manifest")")")")
    done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# vendor PAGE: npm ci its pinned package, then copy (or compare) its files.
vendor() {
    local page=$1 assets="order-api/assets/$1" dir="$work/$1"
    [[ -f "${assets}/npm/package.json" ]] || { echo "no ${assets}/npm/package.json" >&2; return 1; }
    mkdir -p "$dir"
    cp "${assets}/npm/package.json" "${assets}/npm/package-lock.json" "$dir/"
    local name pinned installed
    name=$(node -p 'require(process.argv[1]).vendor.package' "$dir/package.json")
    pinned=$(node -p 'const p = require(process.argv[1]); p.dependencies[p.vendor.package]' "$dir/package.json")
    say "${page}: npm ci (${name} as pinned in ${assets}/npm/package-lock.json)"
    # --ignore-scripts: no install script runs (swagger-ui-dist's dependency
    # @scarf/scarf would report the download to a third party).
    (cd "$dir" && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    installed=$(node -p 'require(process.argv[1]).version' "$dir/node_modules/${name}/package.json")
    if [[ "$pinned" != "$installed" ]]; then
        echo "${page}: package.json pins ${name} ${pinned} but npm ci installed ${installed}: update package-lock.json" >&2
        return 1
    fi
    local pairs differ=0 from to copied=()
    # One "package-file<TAB>committed-name" line per file.
    pairs=$(node -e 'for (const [f, t] of Object.entries(require(process.argv[1]).vendor.files)) console.log(f + "\t" + t)' "$dir/package.json")
    while IFS=$'\t' read -r from to; do
        case "$to" in */*|.*) echo "${page}: bad committed name ${to}" >&2; return 1 ;; esac
        if $check; then
            if ! cmp -s "$dir/node_modules/${name}/${from}" "${assets}/${to}"; then
                echo "differs from ${name} ${installed}: ${assets}/${to}" >&2
                differ=1
            fi
        else
            cp "$dir/node_modules/${name}/${from}" "${assets}/${to}"
            copied+=("$to")
        fi
    done <<<"$pairs"
    if $check; then
        [[ $differ -eq 0 ]] || return 1
        say "${assets} holds ${name} ${installed} unchanged"
    else
        say "copied ${name} ${installed} into ${assets}:"
        (cd "$assets" && ls -l "${copied[@]}")
    fi
}

failed=0
for page in "${pages[@]}"; do
    vendor "$page" || failed=1
done
exit "$failed"
