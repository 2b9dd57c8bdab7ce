#!/usr/bin/env bash
# Builds an out-of-tree kernel module against fetched kernel headers, inside a container of the
# distribution, and packages it under kfleet's asset naming template with its sha256.
#
#   build-module.sh --headers DIR [--extract] --module DIR --out DIR
#   build-module.sh --kernel-dir DIR --module DIR --out DIR
#
# --headers holds the packages `kfleet headers fetch` wrote; they are installed in a container of the
# distribution (docker, or KFLEET_CONTAINER_ENGINE=podman). With --extract they are unpacked into a private directory instead (dpkg-deb or
# rpm2cpio; no container, no root), for a host that runs the distribution's own build tools (the
# same distribution and release). --kernel-dir is a kernel build tree already installed on this
# machine (for example /usr/src/linux-headers-6.1.0-18-amd64 or /lib/modules/$(uname -r)/build):
# nothing is installed and no container is used. Either way the tree's UTS_RELEASE must equal
# KERNEL_VERSION.
#
# Environment: DISTRIBUTION DISTRO_VERSION ARCHITECTURE KERNEL_VERSION DRIVER_VERSION MODULE,
# optionally ASSET_NAME (the name `kfleet identity asset-name` gives, so a kfleet.toml template
# applies) or ASSET_TEMPLATE (default: kfleet's default), IMAGE (container image; default by
# distribution), and SIGN_KEY and SIGN_CERT (PEM files: each module is signed with the kernel
# tree's scripts/sign-file, SIGN_HASH default sha256, for kernels that require signatures; the
# MANIFEST records whether and with which certificate).
# Prints the asset path on the last line of stdout.
set -euo pipefail

die() {
  echo "build-module.sh: $*" >&2
  exit 1
}

usage="usage: (--headers DIR [--extract] | --kernel-dir DIR) --module DIR --out DIR"
headers='' kdir='' module='' out='' extract=''
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
template=${ASSET_TEMPLATE:-'{module}-{driver_version}-{distribution}-{distro_version}-{architecture}-{kernel_version}.tar.xz'}

image_for() {
  case "$DISTRIBUTION" in
    ubuntu) echo "docker.io/library/ubuntu:$DISTRO_VERSION" ;;
    debian) echo "docker.io/library/debian:$DISTRO_VERSION" ;;
    fedora) echo "docker.io/library/fedora:$DISTRO_VERSION" ;;
    centos) echo "quay.io/centos/centos:stream${DISTRO_VERSION%%.*}" ;;
    amazonlinux) echo "docker.io/library/amazonlinux:$DISTRO_VERSION" ;;
    almalinux) echo "docker.io/library/almalinux:$DISTRO_VERSION" ;;
    rocky) echo "docker.io/rockylinux/rockylinux:$DISTRO_VERSION" ;;
    *) die "no container image for $DISTRIBUTION" ;;
  esac
}

if [ -z "$kdir" ] && [ -z "$extract" ] && [ "${KFLEET_IN_CONTAINER:-}" != 1 ]; then
  here=$(cd "$(dirname "$0")" && pwd)
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
    -v "$here/build-module.sh:/kfleet/build-module.sh:ro" \
    -v "$(realpath "$headers"):/headers:ro" \
    -v "$(realpath "$module"):/module:ro" \
    -v "$(realpath "$out"):/out" \
    "${IMAGE:-$(image_for)}" bash /kfleet/build-module.sh --headers /headers --module /module --out /out
fi

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
      kdir=$root/usr/src/kernels/$KERNEL_VERSION
      ;;
  esac
  for p in "${packages[@]}"; do unpack "$p"; done
  [ -d "$kdir" ] || die "the packages in $headers hold no ${kdir#"$root"}"
  real_root=$(realpath "$root")
  while IFS= read -r -d '' link; do
    resolved=$(realpath -m "$link")
    case "$resolved" in
      "$real_root" | "$real_root"/*) ;;
      *) die "${link#"$root"/} points outside the unpacked packages ($(readlink "$link")); refusing them" ;;
    esac
  done < <(find "$root" -type l -print0)
  [ ! -f "$kdir/Makefile" ] || sed -i "s|^include /usr/src/|include $root/usr/src/|" "$kdir/Makefile"
else
  case "$DISTRIBUTION" in
    ubuntu | debian)
      packages=("$headers"/*.deb)
      [ ${#packages[@]} -gt 0 ] || die "no .deb packages in $headers"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends build-essential kmod xz-utils "${packages[@]}" >&2
      kdir=/usr/src/linux-headers-$KERNEL_VERSION
      ;;
    *)
      packages=("$headers"/*.rpm)
      [ ${#packages[@]} -gt 0 ] || die "no .rpm packages in $headers"
      pm=dnf
      command -v dnf >/dev/null || pm=yum
      devel=() userspace=()
      for p in "${packages[@]}"; do
        case "${p##*/}" in
          kernel-headers-*) userspace+=("$p") ;;
          *) devel+=("$p") ;;
        esac
      done
      "$pm" install -y -q gcc make elfutils-libelf-devel tar xz kmod "${devel[@]}" >&2
      # The target kernel's own kernel-headers (EL, Amazon Linux), even where the image has a newer
      # one: glibc-devel accepts any version, so replace it in place.
      [ ${#userspace[@]} -eq 0 ] || rpm -U --oldpackage --replacepkgs "${userspace[@]}" >&2
      kdir=/usr/src/kernels/$KERNEL_VERSION
      ;;
  esac
  [ -d "$kdir" ] || die "the headers installed, but $kdir is missing"
fi
uts=$(sed -n 's/^#define UTS_RELEASE "\(.*\)"$/\1/p' "$kdir/include/generated/utsrelease.h" 2>/dev/null || true)
[ -n "$uts" ] || die "$kdir is not a prepared kernel build tree: include/generated/utsrelease.h has no UTS_RELEASE"
[ "$uts" = "$KERNEL_VERSION" ] || die "$kdir is for kernel $uts, not KERNEL_VERSION=$KERNEL_VERSION"

build=$(mktemp -d)
cp -R "$module"/. "$build"/
make -C "$kdir" M="$build" modules >&2
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
