#!/usr/bin/env bash
# Checks that capi/include/lowbit.h declares exactly the functions
# liblowbit.so (the lowbit-capi crate) exports, after `cargo build --release`
# at the workspace root (or `cargo build --release -p lowbit-capi`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lib="${1:-$root/target/release/liblowbit.so}"
header="$root/capi/include/lowbit.h"
exported="$(nm -D --defined-only "$lib" | awk '{print $3}' | grep '^lowbit_' | sort)"
declared="$(grep -oE '\blowbit_[a-z_]+\(' "$header" | tr -d '(' | sort -u)"
if [[ "$exported" != "$declared" ]]; then
    echo "$header and $lib disagree:"
    diff <(echo "$declared") <(echo "$exported") | sed 's/^</  only in the header:/; s/^>/  only in the library:/' | grep only
    exit 1
fi
echo "capi/include/lowbit.h declares the $(echo "$exported" | wc -l) exported functions"
