#!/usr/bin/env bash
# Builds an out-of-tree kernel module against fetched kernel headers, inside a container of the
# distribution, and packages it under kfleet's asset naming template with its sha256.
#
#   build-module.sh [--plan FILE] --headers DIR [--extract] --module DIR --out DIR
#   build-module.sh [--plan FILE] --kernel-dir DIR --module DIR --out DIR
#
# --plan is the build environment `kfleet build-plan IDENTITY --format env` wrote (from
# assets/build-environments.toml): the image, the commands that reach its repositories and install
# the toolchain and the headers, and the compilers the release ships. --headers holds the packages
# `kfleet headers fetch` wrote; they are installed in a container of that image (docker, or
# KFLEET_CONTAINER_ENGINE=podman). The kernel's CONFIG_CC_VERSION_TEXT names the gcc it was built
# with: the build uses that gcc where the plan lists it (installing its package in the container),
# and says so where it cannot. With --extract they are unpacked into a private directory instead (dpkg-deb or
# rpm2cpio; no container, no root), for a host that runs the distribution's own build tools (the
# same distribution and release). --kernel-dir is a kernel build tree already installed on this
# machine (for example /usr/src/linux-headers-6.1.0-18-amd64 or /lib/modules/$(uname -r)/build):
# nothing is installed and no container is used. Either way the tree's UTS_RELEASE must equal
# KERNEL_VERSION.
#
# Environment: DISTRIBUTION DISTRO_VERSION ARCHITECTURE KERNEL_VERSION DRIVER_VERSION MODULE,
# optionally ASSET_NAME (the name `kfleet identity asset-name` gives, so a kfleet.toml template
# applies) or ASSET_TEMPLATE (default: kfleet's default), IMAGE (replaces the plan's image), and
# SIGN_KEY and SIGN_CERT (PEM files: each module is signed with the kernel
# tree's scripts/sign-file, SIGN_HASH default sha256, for kernels that require signatures; the
# MANIFEST records whether and with which certificate).
# Prints the asset path on the last line of stdout.
set -euo pipefail

die() {
  echo "build-module.sh: $*" >&2
  exit 1
}

usage="usage: [--plan FILE] (--headers DIR [--extract] | --kernel-dir DIR) --module DIR --out DIR"
headers='' kdir='' module='' out='' extract='' plan=''
while [ $# -gt 0 ]; do
  if [ "$1" = --extract ]; then
    extract=1
    shift
    continue
  fi
  [ $# -ge 2 ] || die "$1 needs a value; $usage"
  case "$1" in
    --headers) headers=$2; shift 2 ;;
    --kernel-dir) kdir=$2; shift 2 ;;
    --module) module=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --plan) plan=$2; shift 2 ;;
    *) die "unknown argument $1; $usage" ;;
  esac
done
[ -n "$module" ] && [ -n "$out" ] || die "$usage"
case "${headers:+h}${kdir:+k}" in
  h | k) ;;
  *) die "give exactly one of --headers and --kernel-dir; $usage" ;;
esac
# KFLEET_EXTRACT=1 (set by kfleet's local runner on a host without a container engine) is --extract.
if [ "${KFLEET_EXTRACT:-}" = 1 ] && [ -n "$headers" ]; then
  extract=1
fi
[ -z "$extract" ] || [ -n "$headers" ] || die "--extract unpacks the packages of --headers; $usage"
engine=${KFLEET_CONTAINER_ENGINE:-docker}
case "$engine" in
  docker | podman) ;;
  *) die "KFLEET_CONTAINER_ENGINE is docker or podman, not '$engine'" ;;
esac

fields=(DISTRIBUTION DISTRO_VERSION ARCHITECTURE KERNEL_VERSION DRIVER_VERSION MODULE)
for v in "${fields[@]}"; do
  [ -n "${!v:-}" ] || die "$v is not set"
  # kfleet validated the identity; still, nothing but plain tokens reaches a command line.
  case "${!v}" in
    *[!A-Za-z0-9._+~-]* | *..*) die "$v='${!v}' has characters outside [A-Za-z0-9._+~-]" ;;
  esac
done
[ -d "$module" ] || die "module directory $module does not exist"
# The plan: KEY=VALUE lines, read (never sourced) for the keys it may set.
if [ -n "$plan" ]; then
  [ -f "$plan" ] || die "plan $plan does not exist (kfleet build-plan IDENTITY --format env > FILE)"
  while IFS= read -r line || [ -n "$line" ]; do
    key=${line%%=*}
    case "$key" in
      KFLEET_IDENTITY | KFLEET_IMAGE | KFLEET_SETUP | KFLEET_INSTALL_TOOLCHAIN | KFLEET_INSTALL_HEADERS | \
        KFLEET_FIX_HEADERS | KFLEET_COMPILERS | KFLEET_EXPECTED_GCC)
        printf -v "$key" '%s' "${line#*=}"
        export "${key?}"
        ;;
      '') ;;
      *) die "$plan: unknown line '$key'" ;;
    esac
  done < "$plan"
  [ "${KFLEET_IDENTITY:-}" = "$DISTRIBUTION/$DISTRO_VERSION/$ARCHITECTURE/$KERNEL_VERSION" ] \
    || die "$plan is the plan of ${KFLEET_IDENTITY:-no identity}, not $DISTRIBUTION/$DISTRO_VERSION/$ARCHITECTURE/$KERNEL_VERSION"
fi
template=${ASSET_TEMPLATE:-'{module}-{driver_version}-{distribution}-{distro_version}-{architecture}-{kernel_version}.tar.xz'}

if [ -z "$kdir" ] && [ -z "$extract" ] && [ "${KFLEET_IN_CONTAINER:-}" != 1 ]; then
  here=$(cd "$(dirname "$0")" && pwd)
  image=${IMAGE:-${KFLEET_IMAGE:-}}
  [ -n "$image" ] || die "no container image: pass --plan FILE (kfleet build-plan IDENTITY --format env) or set IMAGE"
  [ -n "${KFLEET_INSTALL_TOOLCHAIN:-}" ] && [ -n "${KFLEET_INSTALL_HEADERS:-}" ] \
    || die "the container build needs the plan's install commands: pass --plan FILE"
  mkdir -p "$out"
  signing=()
  if [ -n "${SIGN_KEY:-}" ] || [ -n "${SIGN_CERT:-}" ]; then
    [ -f "${SIGN_KEY:-}" ] && [ -f "${SIGN_CERT:-}" ] || die "SIGN_KEY and SIGN_CERT must both name PEM files"
    signing=(-e SIGN_KEY=/kfleet/sign.key -e SIGN_CERT=/kfleet/sign.crt -e SIGN_HASH
      -v "$(realpath "$SIGN_KEY"):/kfleet/sign.key:ro" -v "$(realpath "$SIGN_CERT"):/kfleet/sign.crt:ro")
  fi
  exec "$engine" run --rm -e KFLEET_IN_CONTAINER=1 \
    -e DISTRIBUTION -e DISTRO_VERSION -e ARCHITECTURE -e KERNEL_VERSION -e DRIVER_VERSION -e MODULE \
    -e ASSET_TEMPLATE="$template" -e ASSET_NAME "${signing[@]}" \
    -e KFLEET_SETUP -e KFLEET_INSTALL_TOOLCHAIN -e KFLEET_INSTALL_HEADERS -e KFLEET_FIX_HEADERS \
    -e KFLEET_COMPILERS -e KFLEET_EXPECTED_GCC \
    -v "$here/build-module.sh:/kfleet/build-module.sh:ro" \
    -v "$(realpath "$headers"):/headers:ro" \
    -v "$(realpath "$module"):/module:ro" \
    -v "$(realpath "$out"):/out" \
    "$image" bash /kfleet/build-module.sh --headers /headers --module /module --out /out
fi

# Where an RPM family's headers put the kernel build tree, under ROOT: Red Hat's layout
# /usr/src/kernels/KERNEL, or SUSE's /usr/src/linux-VERSION-RELEASE-obj/CPU_ARCH/FLAVOUR (its
# CPU_ARCH is the kernel's own name, arm64 for aarch64).
rpm_tree() {
  local root=$1
  case "$DISTRIBUTION" in
    leap | tumbleweed | sles)
      local trees=("$root/usr/src/linux-${KERNEL_VERSION%-*}-obj"/*/"${KERNEL_VERSION##*-}")
      if [ ${#trees[@]} -gt 0 ]; then echo "${trees[0]}"; else echo "$root/usr/src/linux-${KERNEL_VERSION%-*}-obj/$ARCHITECTURE/${KERNEL_VERSION##*-}"; fi
      ;;
    *) echo "$root/usr/src/kernels/$KERNEL_VERSION" ;;
  esac
}

build='' root='' tmp=''
cleanup() {
  rm -rf "$build" "$root"
  [ -z "$tmp" ] || rm -f "$tmp"
}
trap cleanup EXIT

shopt -s nullglob
if [ -n "$kdir" ]; then
  [ -d "$kdir" ] || die "kernel build tree $kdir does not exist"
elif [ -n "$extract" ]; then
  root=$(mktemp -d)
  # Each package is unpacked into a directory of its own, its absolute links pointed into the
  # private root, then merged: a directory that an earlier package made a symlink is refused, and
  # files replace (never write through) what is there, so no package can redirect another's
  # files outside the root. Every link must then resolve inside the root.
  unpack() {
    local package=$1 stage
    stage=$(mktemp -d -p "$root" .stage.XXXXXX)
    case "$package" in
      *.deb) dpkg-deb -x "$package" "$stage" || die "cannot unpack $package" ;;
      *.rpm)
        if ! command -v rpm2cpio >/dev/null || ! command -v cpio >/dev/null; then
          die "--extract of .rpm packages needs rpm2cpio and cpio"
        fi
        rpm2cpio "$package" | (cd "$stage" && cpio -idm --quiet --no-absolute-filenames) \
          || die "cannot unpack $package"
        ;;
    esac
    while IFS= read -r -d '' link; do
      target=$(readlink "$link")
      case "$target" in /*) ln -sfn "$root$target" "$link" ;; esac
    done < <(find "$stage" -type l -print0)
    while IFS= read -r -d '' dir; do
      rel=${dir#"$stage"}
      [ ! -L "$root$rel" ] || die "${package##*/}: ${rel#/} is a symlink made by another package; refusing to unpack through it"
    done < <(find "$stage" -mindepth 1 -type d -print0)
    cp -a --remove-destination "$stage/." "$root/" || die "cannot merge $package"
    rm -rf "$stage"
  }
  case "$DISTRIBUTION" in
    ubuntu | debian)
      packages=("$headers"/*.deb)
      [ ${#packages[@]} -gt 0 ] || die "no .deb packages in $headers"
      kdir=$root/usr/src/linux-headers-$KERNEL_VERSION
      ;;
    *)
      packages=("$headers"/*.rpm)
      [ ${#packages[@]} -gt 0 ] || die "no .rpm packages in $headers"
      ;;
  esac
  for p in "${packages[@]}"; do unpack "$p"; done
  case "$DISTRIBUTION" in
    ubuntu | debian) ;;
    *) kdir=$(rpm_tree "$root") ;;
  esac
  [ -d "$kdir" ] || die "the packages in $headers hold no ${kdir#"$root"}"
  real_root=$(realpath "$root")
  while IFS= read -r -d '' link; do
    resolved=$(realpath -m "$link")
    case "$resolved" in
      "$real_root" | "$real_root"/*) ;;
      *) die "${link#"$root"/} points outside the unpacked packages ($(readlink "$link")); refusing them" ;;
    esac
  done < <(find "$root" -type l -print0)
  # Debian's headers Makefile names the common tree (and, from 7.x, its own output tree as
  # KBUILD_OUTPUT) by absolute path: point both into the private root.
  [ ! -f "$kdir/Makefile" ] \
    || sed -i -e "s|^include /usr/src/|include $root/usr/src/|" \
      -e "s|^KBUILD_OUTPUT=/usr/src/|KBUILD_OUTPUT=$root/usr/src/|" "$kdir/Makefile"
else
  # In the container: the plan's repository setup, toolchain, then the fetched packages.
  if [ -n "${KFLEET_SETUP:-}" ]; then
    bash -ec "$KFLEET_SETUP" >&2 || die "the plan's repository setup failed: $KFLEET_SETUP"
  fi
  bash -ec "$KFLEET_INSTALL_TOOLCHAIN" >&2 || die "installing the toolchain failed: $KFLEET_INSTALL_TOOLCHAIN"
  read -ra install <<< "$KFLEET_INSTALL_HEADERS"
  case "$DISTRIBUTION" in
    ubuntu | debian)
      packages=("$headers"/*.deb)
      [ ${#packages[@]} -gt 0 ] || die "no .deb packages in $headers"
      if ! env "${install[@]}" "${packages[@]}" >&2; then
        [ -n "${KFLEET_FIX_HEADERS:-}" ] || die "installing the header packages failed"
        bash -ec "$KFLEET_FIX_HEADERS" >&2 || die "installing the header packages failed, and so did: $KFLEET_FIX_HEADERS"
      fi
      kdir=/usr/src/linux-headers-$KERNEL_VERSION
      ;;
    *)
      packages=("$headers"/*.rpm)
      [ ${#packages[@]} -gt 0 ] || die "no .rpm packages in $headers"
      devel=() userspace=()
      for p in "${packages[@]}"; do
        case "${p##*/}" in
          kernel-headers-* | kernel*-headers-*) userspace+=("$p") ;;
          *) devel+=("$p") ;;
        esac
      done
      env "${install[@]}" "${devel[@]}" >&2 || die "installing the header packages failed"
      # The target kernel's own kernel-headers (EL, Amazon Linux), even where the image has a newer
      # one: glibc-devel accepts any version, so replace it in place.
      [ ${#userspace[@]} -eq 0 ] || rpm -U --oldpackage --replacepkgs "${userspace[@]}" >&2
      kdir=$(rpm_tree "")
      ;;
  esac
  [ -d "$kdir" ] || die "the headers installed, but $kdir is missing"
fi
uts=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"$/\1/p' "$kdir/include/generated/utsrelease.h" 2>/dev/null || true)
[ -n "$uts" ] || die "$kdir is not a prepared kernel build tree: include/generated/utsrelease.h has no UTS_RELEASE"
[ "$uts" = "$KERNEL_VERSION" ] || die "$kdir is for kernel $uts, not KERNEL_VERSION=$KERNEL_VERSION"

# The gcc the kernel was built with (CONFIG_CC_VERSION_TEXT, Linux 5.8 and later; before that
# CONFIG_GCC_VERSION): use it where the plan lists it, installing its package in the container;
# otherwise say what is used.
cc_text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$kdir/include/config/auto.conf" "$kdir/.config" 2>/dev/null | head -n 1 || true)
gcc_major=''
case "$cc_text" in
  *clang*) echo "build-module.sh: the kernel was built with clang ($cc_text); building with the default compiler" >&2 ;;
  *gcc* | *GCC*) gcc_major=$(printf '%s\n' "$cc_text" | sed -n 's/.*) \([0-9][0-9]*\)\..*/\1/p') ;;
  '')
    # Linux 4.18 to 5.7 name only the version (CONFIG_GCC_VERSION=90400 is gcc 9.4); older
    # kernels nothing, where the plan's expectation stands.
    gcc_version=$(sed -n 's/^CONFIG_GCC_VERSION=\([1-9][0-9]*\)$/\1/p' "$kdir/include/config/auto.conf" "$kdir/.config" 2>/dev/null | head -n 1 || true)
    if [ -n "$gcc_version" ]; then
      gcc_major=$((gcc_version / 10000))
      cc_text="CONFIG_GCC_VERSION=$gcc_version"
    else
      gcc_major=${KFLEET_EXPECTED_GCC:-}
    fi
    ;;
esac
make_cc=()
if [ -n "$gcc_major" ]; then
  provider=''
  for entry in ${KFLEET_COMPILERS:-}; do
    [ "${entry%%=*}" != "$gcc_major" ] || provider=${entry#*=}
  done
  default_gcc=$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)
  if [ -z "${KFLEET_COMPILERS:-}" ]; then
    echo "build-module.sh: the kernel was built with gcc $gcc_major${cc_text:+ ($cc_text)}; without a plan naming the release's compilers, building with gcc $default_gcc" >&2
  elif [ -z "$provider" ]; then
    echo "build-module.sh: the kernel was built with gcc $gcc_major${cc_text:+ ($cc_text)}, which this release does not ship (it has: $KFLEET_COMPILERS); building with gcc $default_gcc" >&2
  else
    package=${provider%%:*} cc=${provider#*:}
    if ! command -v "$cc" >/dev/null && [ "${KFLEET_IN_CONTAINER:-}" = 1 ] && [ "${install[0]:-}" != dpkg ]; then
      env "${install[@]}" "$package" >&2 || die "cannot install $package for gcc $gcc_major"
    fi
    if command -v "$cc" >/dev/null; then
      echo "build-module.sh: building with $cc: the kernel was built with gcc $gcc_major${cc_text:+ ($cc_text)}" >&2
      make_cc=(CC="$cc")
    else
      echo "build-module.sh: the kernel was built with gcc $gcc_major; $cc (package $package) is not installed here; building with gcc $default_gcc" >&2
    fi
  fi
fi

# Kbuild makes each module's BTF with pahole where the kernel has CONFIG_DEBUG_INFO_BTF_MODULES
# and the tree holds vmlinux (scripts/Makefile.modfinal): say so now, not after compiling with
# "pahole: not found". kbuild's own PAHOLE variable names another pahole.
if [ -e "$kdir/vmlinux" ] && grep -qs '^CONFIG_DEBUG_INFO_BTF_MODULES=y' "$kdir/include/config/auto.conf" \
  && ! command -v "${PAHOLE:-pahole}" >/dev/null; then
  die "$kdir holds vmlinux and the kernel has CONFIG_DEBUG_INFO_BTF_MODULES=y, so kbuild runs ${PAHOLE:-pahole} for each module's BTF, and it is not installed: install pahole (Debian and Ubuntu: dwarves or pahole; RPM families: dwarves)"
fi

build=$(mktemp -d)
cp -R "$module"/. "$build"/
make -C "$kdir" M="$build" "${make_cc[@]}" modules >&2
mapfile -t modules < <(cd "$build" && find . -name '*.ko' -printf '%P\n' | sort)
[ ${#modules[@]} -gt 0 ] || die "the build produced no .ko file"

name=${ASSET_NAME:-$template}
name=${name//\{module\}/$MODULE}
name=${name//\{driver_version\}/$DRIVER_VERSION}
name=${name//\{distribution\}/$DISTRIBUTION}
name=${name//\{distro_version\}/$DISTRO_VERSION}
name=${name//\{architecture\}/$ARCHITECTURE}
name=${name//\{kernel_version\}/$KERNEL_VERSION}
case "$name" in
  */* | .* | *'{'* | '') die "the asset name '$name' (from ASSET_NAME or ASSET_TEMPLATE) must be one file name with every placeholder known" ;;
esac

# A module's .modinfo is NUL-separated key=value strings: read its vermagic without kmod, and
# refuse a module built for another kernel.
vermagic_of() { tr '\0' '\n' < "$1" | sed -n 's/^vermagic=//p' | head -n 1; }

# Signing, when a key is given: the tree's own sign-file appends the signature the kernel checks.
signer=no
if [ -n "${SIGN_KEY:-}" ] || [ -n "${SIGN_CERT:-}" ]; then
  [ -f "${SIGN_KEY:-}" ] && [ -f "${SIGN_CERT:-}" ] || die "SIGN_KEY and SIGN_CERT must both name PEM files"
  [ -x "$kdir/scripts/sign-file" ] || die "$kdir/scripts/sign-file is missing: this kernel tree cannot sign modules"
  for ko in "${modules[@]}"; do
    "$kdir/scripts/sign-file" "${SIGN_HASH:-sha256}" "$SIGN_KEY" "$SIGN_CERT" "$build/$ko" >&2 \
      || die "sign-file could not sign $ko"
  done
  signer="${SIGN_HASH:-sha256} certificate-sha256:$(sha256sum < "$SIGN_CERT" | cut -d' ' -f1)"
fi
{
  echo "module=$MODULE"
  echo "driver_version=$DRIVER_VERSION"
  echo "identity=$DISTRIBUTION/$DISTRO_VERSION/$ARCHITECTURE/$KERNEL_VERSION"
  for ko in "${modules[@]}"; do
    magic=$(vermagic_of "$build/$ko")
    case "$magic" in
      "$KERNEL_VERSION "* | "$KERNEL_VERSION") ;;
      *) die "$ko has vermagic '$magic', not for kernel $KERNEL_VERSION" ;;
    esac
    echo "vermagic[$ko]=$magic"
    echo "signed[$ko]=$signer"
  done
} > "$build/MANIFEST"

mkdir -p "$out"
tmp="$out/.$name.partial"
tar -C "$build" -cJf "$tmp" MANIFEST "${modules[@]}"
sum=$(sha256sum "$tmp" | cut -d' ' -f1)
echo "$sum  $name" > "$out/.$name.sha256.partial"
mv "$tmp" "$out/$name"
mv "$out/.$name.sha256.partial" "$out/$name.sha256"
echo "$out/$name"
