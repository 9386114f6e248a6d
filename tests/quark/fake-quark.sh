#!/bin/sh
# A stand-in for Quark's binary, for contract tests: it records how it was
# called (argv, one per line, then the working directory) next to the pid
# file, and daemonises a process that plays the sandbox, as `quark sandbox`
# does, writing its pid to --pid-file.
set -eu
pidfile=""
prev=""
for a in "$@"; do
  if [ "$prev" = "--pid-file" ]; then pidfile="$a"; fi
  prev="$a"
done
[ -n "$pidfile" ] || { echo "fake-quark: no --pid-file" >&2; exit 2; }
log="$(dirname "$pidfile")/quark.argv"
: > "$log"
for a in "$@"; do printf '%s\n' "$a" >> "$log"; done
printf 'cwd=%s\n' "$(pwd)" >> "$log"
setsid sleep 100000 < /dev/null > /dev/null 2>&1 &
echo $! > "$pidfile"
