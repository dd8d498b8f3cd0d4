#!/bin/sh
# fake_moonjail.sh: development stand-in for the moonjail CLI, for testing
# compare.py before the real binary builds.  It accepts the CLI contract
# `run FILE [--memory SIZE] [--timeout DURATION] [--instructions N]
# [--output-limit SIZE] [--json]` and simply runs FILE with lua5.4 (or $LUA),
# so compare.py's ratios should come out at ~1.0x.
#   python3 bench/compare.py --moonjail bench/fake_moonjail.sh
LUA=${LUA:-lua5.4}
case "$1" in
  --version) echo "fake-moonjail (runs $LUA)"; exit 0 ;;
  run) shift ;;
  *) echo "usage: $0 run FILE [options]" >&2; exit 2 ;;
esac
[ $# -ge 1 ] || { echo "$0: missing FILE" >&2; exit 2; }
file=$1; shift
while [ $# -gt 0 ]; do
  case "$1" in
    --memory|--timeout|--instructions|--output-limit)
      [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 2; }
      shift 2 ;;
    --json) shift ;;
    *) echo "$0: unknown option $1" >&2; exit 2 ;;
  esac
done
exec "$LUA" "$file"
