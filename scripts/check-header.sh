#!/usr/bin/env bash
# Checks that include/lowbit.h declares exactly the functions liblowbit.so
# exports (after `cargo build --release`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lib="${1:-$root/target/release/liblowbit.so}"
exported="$(nm -D --defined-only "$lib" | awk '{print $3}' | grep '^lowbit_' | sort)"
declared="$(grep -oE '\blowbit_[a-z_]+\(' "$root/include/lowbit.h" | tr -d '(' | sort -u)"
if [[ "$exported" != "$declared" ]]; then
    echo "include/lowbit.h and $lib disagree:"
    diff <(echo "$declared") <(echo "$exported") | sed 's/^</  only in the header:/; s/^>/  only in the library:/' | grep only
    exit 1
fi
echo "include/lowbit.h declares the $(echo "$exported" | wc -l) exported functions"
