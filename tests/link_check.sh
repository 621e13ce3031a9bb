#!/bin/sh
# Each static library links on its own: no undefined project symbol its declared dependencies do not define.
#
# Usage: link_check.sh BUILD_DIR NAME=LIB[:DEP...] ...
#   LIB and each DEP are paths to static libraries (.a); DEP lists the library's
#   declared project dependencies, transitive ones included.  Every static library
#   BUILD_DIR's meson-info lists must be one of the LIBs: one left off the list fails.
# A project symbol is one named p11g_* or pjson_*, or one that any library given
# defines: a library that needs a symbol only an executable provides (p11g_host_*
# once lived so), or one from a library it does not declare, fails.  A symbol two
# libraries define (a source compiled into both) has two homes: with
# LINK_CHECK_DUPLICATES=fail that fails too, otherwise it is printed as a note.
set -eu

NM=${NM:-nm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build=$1
shift

# Defined external symbols of a library, one per line, sorted.
defined() {
	"$NM" -g --defined-only "$1" 2>/dev/null | awk 'NF >= 3 { print $3 }' | sort -u
}

undefined() {
	"$NM" -g --undefined-only "$1" 2>/dev/null | awk 'NF >= 2 { print $2 }' | sort -u
}

# Every symbol any library given defines.
: >"$tmp/all"
for spec in "$@"; do
	libs=${spec#*=}
	lib=${libs%%:*}
	[ -f "$lib" ] || {
		echo "missing library: $lib" >&2
		exit 1
	}
	defined "$lib" >>"$tmp/all"
done
status=0
for spec in "$@"; do
	libs=${spec#*=}
	realpath "${libs%%:*}"
done | sort >"$tmp/listed"
"${PYTHON:-python3}" -c '
import json, sys
for t in json.load(open(sys.argv[1])):
    if t["type"] == "static library":
        print("\n".join(t["filename"]))
' "$build/meson-info/intro-targets.json" | xargs realpath | sort >"$tmp/built"
if comm -23 "$tmp/built" "$tmp/listed" | grep .; then
	echo "the static libraries above are not checked: name them in tests/meson.build"
	status=1
fi
sort "$tmp/all" | uniq -d >"$tmp/twice"
if [ -s "$tmp/twice" ]; then
	if [ "${LINK_CHECK_DUPLICATES:-fail}" = fail ]; then
		echo "symbols defined in more than one library:"
		status=1
	else
		echo "note: symbols defined in more than one library:"
	fi
	sed 's/^/  /' "$tmp/twice"
fi
sort -u -o "$tmp/all" "$tmp/all"

for spec in "$@"; do
	name=${spec%%=*}
	libs=${spec#*=}
	: >"$tmp/have"
	# The library itself and its declared dependencies.
	old_ifs=$IFS
	IFS=:
	for l in $libs; do
		defined "$l" >>"$tmp/have"
	done
	IFS=$old_ifs
	sort -u -o "$tmp/have" "$tmp/have"
	lib=${libs%%:*}
	undefined "$lib" >"$tmp/need"
	# Project symbols needed and defined neither here nor in a declared dependency.
	{
		grep -E '^(p11g_|pjson_)' "$tmp/need" || true
		comm -12 "$tmp/need" "$tmp/all"
	} | sort -u | comm -23 - "$tmp/have" >"$tmp/missing"
	if [ -s "$tmp/missing" ]; then
		echo "$name: undefined project symbols its dependencies do not define:"
		sed 's/^/  /' "$tmp/missing"
		status=1
	else
		echo "$name: ok"
	fi
done
exit $status
