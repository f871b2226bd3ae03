#!/usr/bin/env bash
# run_consumer.sh: installs an orthotron build tree into a temporary prefix, checks the installed
# layout, then configures, builds and runs the standalone consumer project against the package.
#
#   run_consumer.sh <cmake> <build dir> <source dir> <consumer project> <config> <prefix path> [<c++> [<launcher>]]
#
# <prefix path>: ':'-separated directories added after the install prefix to the consumer's
# CMAKE_PREFIX_PATH (at least LibTorch's torch.utils.cmake_prefix_path). ORTHOTRON_KEEP_CONSUMER=1
# keeps the temporary directory for inspection.
set -euo pipefail

if (($# < 6)); then
  echo "usage: $0 <cmake> <build dir> <source dir> <consumer project> <config> <prefix path> [<c++> [<launcher>]]" >&2
  exit 2
fi
cmake_bin=$1 build=$2 source=$3 project=$4 config=$5 prefix_path=$6 cxx=${7:-} launcher=${8:-}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/orthotron-consumer.XXXXXX")
cleanup() {
  if [ "${ORTHOTRON_KEEP_CONSUMER:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
fail() {
  echo "install_consumer: FAIL: $*" >&2
  exit 1
}
prefix=$tmp/prefix

echo "== cmake --install $build --prefix $prefix"
"$cmake_bin" --install "$build" --prefix "$prefix" --config "$config" >"$tmp/install.log" || {
  cat "$tmp/install.log"
  fail "cmake --install failed"
}

echo "== installed layout"
for folder in base parallel optim; do
  for header in "$source/$folder"/*.h; do
    [ -f "$prefix/include/orthotron/$folder/$(basename "$header")" ] || fail "missing include/orthotron/$folder/$(basename "$header")"
  done
  echo "include/orthotron/$folder: $(find "$prefix/include/orthotron/$folder" -name "*.h" | wc -l) headers"
done
libdir=$(dirname "$(find "$prefix" -name 'orthotronConfig.cmake' -print -quit)")
[ -f "$libdir/orthotronConfig.cmake" ] || fail "no orthotronConfig.cmake under $prefix"
for f in orthotronConfigVersion.cmake orthotronTargets.cmake; do
  [ -f "$libdir/$f" ] || fail "missing $libdir/$f"
done
for lib in base parallel optim; do
  [ -n "$(find "$prefix" -name "liborthotron_$lib.*" -print -quit)" ] || fail "missing liborthotron_$lib"
done
echo "package config: ${libdir#"$prefix"/}"
# The package must not point back into the source or build tree (it must survive their removal).
if grep -rIl -e "$build" -e "$source" "$prefix/lib" "$prefix/include" 2>/dev/null; then
  fail "the installed package refers to the source or build tree (files above)"
fi

echo "== configure the consumer (CMAKE_PREFIX_PATH=$prefix;${prefix_path//:/;})"
args=(-S "$project" -B "$tmp/build" -DCMAKE_BUILD_TYPE="$config" "-DCMAKE_PREFIX_PATH=$prefix;${prefix_path//:/;}")
[ -n "$cxx" ] && args+=("-DCMAKE_CXX_COMPILER=$cxx")
[ -n "$launcher" ] && args+=("-DCMAKE_CXX_COMPILER_LAUNCHER=$launcher")
"$cmake_bin" "${args[@]}" >"$tmp/configure.log" 2>&1 || {
  cat "$tmp/configure.log"
  fail "configuring the consumer failed"
}
grep -- "-- orthotron " "$tmp/configure.log" || true

echo "== build the consumer"
"$cmake_bin" --build "$tmp/build" --config "$config" -j1 >"$tmp/build.log" 2>&1 || {
  cat "$tmp/build.log"
  fail "building the consumer failed"
}

echo "== run the consumer"
exe=$(find "$tmp/build" -name orthotron_consumer -type f -perm -u+x -print -quit)
[ -n "$exe" ] || fail "no orthotron_consumer binary"
"$exe" || fail "the consumer exited with $?"
echo "install_consumer: PASS"
