#!/usr/bin/env bash
# Build the vision_msgs-compatible interface package (ros2_ws/src/vision_msgs) into a venv that
# holds ROS 2 from the PyPI `ros-*` wheels.
#
#   usage: bash scripts/build_interfaces.sh VENV_DIR      (the Makefile runs it as `... .venv`)
#
# Why: vision_msgs is on no package registry, so a pip-installed ROS 2 cannot get it. Where a
# vision_msgs from outside the venv already imports (a real ROS install, sourced), that one is
# used and nothing is built. Otherwise the package is built with plain CMake against the wheels
# and installed into the venv itself, so a clean environment imports it with no variables set.
# Notes on why each step is needed: /work/shared/ROS2_ON_PIP.md ("Building an interface package").
set -euo pipefail

die() {
    echo "build_interfaces: ERROR: $*" >&2
    exit 1
}
log() { echo "build_interfaces: $*"; }

[[ $# -eq 1 ]] || die "usage: bash scripts/build_interfaces.sh VENV_DIR"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -d "$1" ]] || die "venv directory '$1' does not exist (run 'make setup' first)"
VENV="$(cd "$1" && pwd)"
PY="$VENV/bin/python"
PKG_SRC="$REPO_ROOT/ros2_ws/src/vision_msgs"
BUILD_DIR="$REPO_ROOT/build/interfaces"

[[ -x "$PY" ]] || die "no Python at $PY (is '$1' a venv?)"
[[ -f "$PKG_SRC/CMakeLists.txt" ]] || die "package sources missing: $PKG_SRC/CMakeLists.txt"

# 1. A vision_msgs from outside this venv (system ROS install) already imports: use it.
existing="$("$PY" -c 'import vision_msgs.msg, os; print(os.path.realpath(vision_msgs.__file__))' \
    2>/dev/null || true)"
if [[ -n "$existing" ]]; then
    venv_real="$(realpath "$VENV")"
    if [[ "$existing" != "$venv_real"/* ]]; then
        log "vision_msgs already importable from $existing (system package); nothing to build."
        exit 0
    fi
    log "vision_msgs in the venv was built by this script before; rebuilding (incremental)."
fi

# 2. Prerequisites: build tools from the venv (pip wheels) and a C/C++ compiler.
CMAKE="$VENV/bin/cmake"
[[ -x "$CMAKE" ]] || CMAKE="$(command -v cmake || true)"
[[ -n "$CMAKE" ]] || die "cmake not found (expected $VENV/bin/cmake from the 'cmake' wheel)"
command -v cc >/dev/null || command -v gcc >/dev/null ||
    die "no C compiler (cc/gcc) on PATH; install build-essential"
command -v c++ >/dev/null || command -v g++ >/dev/null ||
    die "no C++ compiler (c++/g++) on PATH; install build-essential"
for pkg in rosidl_default_generators ament_cmake std_msgs geometry_msgs sensor_msgs; do
    [[ -d "$VENV/share/$pkg/cmake" ]] ||
        die "$VENV/share/$pkg/cmake missing: install the pinned ros-* build wheels" \
            "(pip install -r requirements.txt)"
done

# 3. The wheels' exported *rosidl_generator_pyExport.cmake files name the wheel build machine's
#    Python and numpy include dirs; CMake rejects imported targets with non-existent include dirs.
#    Rewrite every non-existent Python / numpy include dir to this venv's. Idempotent: paths that
#    exist are left alone.
"$PY" - "$VENV" <<'PYEOF' || die "patching the wheels' rosidl_generator_py CMake exports failed"
import glob
import os
import re
import sys
import sysconfig

import numpy

venv = sys.argv[1]
py_inc = sysconfig.get_paths()["include"]
np_inc = numpy.get_include()
if not os.path.isfile(os.path.join(py_inc, "Python.h")):
    sys.exit(
        f"build_interfaces: ERROR: Python headers missing ({py_inc}/Python.h); "
        "install python3-dev (Debian: apt-get install python3.11-dev)"
    )
files = sorted(glob.glob(os.path.join(venv, "share", "*", "cmake", "*rosidl_generator_pyExport.cmake")))
if not files:
    sys.exit("build_interfaces: ERROR: no *rosidl_generator_pyExport.cmake under the venv")
py_re = re.compile(r"^.*/include/python3\.\d+$")
np_re = re.compile(r"^.*/numpy/(_core|core)/include$")


def fix_dirs(match: re.Match) -> str:
    out = []
    for d in match.group(2).split(";"):
        if d and not os.path.exists(d):
            if py_re.match(d):
                d = py_inc
            elif np_re.match(d):
                d = np_inc
        out.append(d)
    return f'{match.group(1)}"{";".join(out)}"'


patched = 0
for path in files:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = re.sub(r'(INTERFACE_INCLUDE_DIRECTORIES\s+)"([^"]*)"', fix_dirs, text)
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
        patched += 1
print(f"build_interfaces: {len(files)} rosidl_generator_py exports checked, {patched} patched")
PYEOF

# 4. Configure, build, install into the venv.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
# A build dir configured for another venv/checkout location cannot be reused.
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]] &&
    ! grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$BUILD_DIR/CMakeCache.txt"; then
    log "build dir was configured for another prefix; starting it afresh"
    rm -rf "$BUILD_DIR"
fi

mkdir -p "$BUILD_DIR"
start=$SECONDS
log "configuring ($PKG_SRC -> $BUILD_DIR, prefix $VENV)"
"$CMAKE" -S "$PKG_SRC" -B "$BUILD_DIR" \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DCMAKE_PREFIX_PATH="$VENV" \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_TESTING=OFF \
    -DPython3_EXECUTABLE="$PY" \
    -Wno-dev >"$BUILD_DIR/configure.log" 2>&1 || {
    tail -n 40 "$BUILD_DIR/configure.log" >&2
    die "cmake configure failed (full log: $BUILD_DIR/configure.log)"
}
log "building (-j2)"
"$CMAKE" --build "$BUILD_DIR" -j2 >"$BUILD_DIR/build.log" 2>&1 || {
    tail -n 40 "$BUILD_DIR/build.log" >&2
    die "cmake build failed (full log: $BUILD_DIR/build.log)"
}
log "installing into $VENV"
"$CMAKE" --install "$BUILD_DIR" >"$BUILD_DIR/install.log" 2>&1 || {
    tail -n 40 "$BUILD_DIR/install.log" >&2
    die "cmake install failed (full log: $BUILD_DIR/install.log)"
}
log "built and installed in $((SECONDS - start)) s"

# 5. The messages must import from a clean environment (no AMENT_PREFIX_PATH, no sourcing).
env -i HOME="$HOME" PATH=/usr/bin:/bin "$PY" -c \
    'from vision_msgs.msg import Detection2DArray, BoundingBox2DArray; Detection2DArray()' ||
    die "installed, but 'from vision_msgs.msg import Detection2DArray' fails in a clean env"
log "OK: vision_msgs imports from $VENV in a clean environment"
