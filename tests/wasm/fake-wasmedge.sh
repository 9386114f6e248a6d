#!/bin/sh
# Stands in for the wasmedge CLI in the contract test: records the argv it was given
# (one argument per line) and answers like a module that printed a line and exited 5.
for a in "$@"; do printf '%s\n' "$a"; done > "$KUASAR_FAKE_WASMEDGE_LOG"
echo "fake wasmedge ran"
exit 5
