#!/usr/bin/env bash
# Builds the Debian package pipehook_<version>_<arch>.deb (SPEC §9):
#
#   Packaging/build-deb.sh [--binary PATH] [--out DIR] [--compression xz|zstd|gzip|none]
#
# Without --binary it first builds the release binary from the repository root (about 20 minutes
# on 2 cores). On a shared machine run it under `chrt --idle 0`, not `nice`: swift-build's
# compiler jobs do not keep a nice value (they ran at nice 0 under a swift-build at nice 19).
#   swift build -c release --static-swift-stdlib --product pipehook --scratch-path .build-release
# and refuses it if it needs a shared library that no installed Debian package provides.
# --binary PATH packages a binary built already instead (the package test uses the debug build;
# a library from outside Debian, such as the toolchain's libswiftCore, is then only a warning and
# the package only works where that library is).
#
# The version is PipehookVersion.current (Sources/PipehookDaemon/Version.swift); the binary's
# `--version` and the top entry of Packaging/debian/changelog must say the same. The architecture
# is `dpkg --print-architecture`. Depends is computed by dpkg-shlibdeps from the libraries the
# stripped binary links (without dpkg-dev: the packages owning them, unversioned), plus
# `systemd | adduser` for creating the system user. The .deb goes to DIR (default .build-deb/);
# its path is the last line printed.
set -euo pipefail
umask 022

repo=$(cd "$(dirname "$0")/.." && pwd)
packaging="$repo/Packaging"
binary=""
out="$repo/.build-deb"
compression=xz

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "build-deb: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
        --compression) [ $# -ge 2 ] || usage; compression=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "build-deb: unknown argument $1" >&2; usage ;;
    esac
done
case "$compression" in xz|zstd|gzip|none) ;; *) die "--compression must be xz, zstd, gzip or none" ;; esac

version=$(sed -n 's/^ *public static let current = "\([^"]*\)".*/\1/p' "$repo/Sources/PipehookDaemon/Version.swift")
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "no usable version in Sources/PipehookDaemon/Version.swift (found '$version')"
changelog_version=$(sed -n '1s/^pipehook (\([^)]*\)).*/\1/p' "$packaging/debian/changelog")
[ "$changelog_version" = "$version" ] ||
    die "Packaging/debian/changelog starts with version '$changelog_version', Version.swift says $version: add a changelog entry"
arch=$(dpkg --print-architecture)
strict_libraries=1

if [ -z "$binary" ]; then
    echo "building the release binary (static Swift runtime) in $repo/.build-release"
    (cd "$repo" && swift build -c release --static-swift-stdlib --product pipehook --scratch-path .build-release)
    binary="$repo/.build-release/release/pipehook"
else
    strict_libraries=0
fi
[ -f "$binary" ] && [ -x "$binary" ] || die "no executable at $binary"
binary_version=$("$binary" --version) || die "$binary --version failed"
[ "$binary_version" = "$version" ] || die "$binary --version prints '$binary_version', the package version is $version"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"

# Files, modes as installed (dpkg-deb --root-owner-group makes them all root:root).
install -D -m 0755 "$binary" "$root/usr/bin/pipehook"
strip "$root/usr/bin/pipehook"
install -D -m 0644 "$packaging/pipehook.yaml" "$root/etc/pipehook/pipehook.yaml"
install -D -m 0644 "$repo/config/pipehook.service" "$root/lib/systemd/system/pipehook.service"
install -D -m 0644 "$packaging/debian/sysusers.conf" "$root/usr/lib/sysusers.d/pipehook.conf"
install -d -m 0755 "$root/usr/share/pipehook/handlers"
install -m 0755 "$repo"/handlers/*.sh "$root/usr/share/pipehook/handlers/"
doc="$root/usr/share/doc/pipehook"
install -D -m 0644 "$packaging/debian/copyright" "$doc/copyright"
gzip -9n < "$packaging/debian/changelog" > "$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
install -m 0644 "$repo/README.md" "$doc/README.md"
install -m 0644 "$repo/config/pipehook.example.yaml" "$doc/pipehook.example.yaml"

# Shared libraries: every NEEDED entry must come from an installed Debian package.
staged="$root/usr/bin/pipehook"
needed=$(objdump -p "$staged" | awk '$1 == "NEEDED" { print $2 }')
owner_of() { # the package owning a library file, trying the /usr-merged spellings of its path
    local path=$1 real
    real=$(readlink -f "$path")
    for candidate in "$path" "$real" "/usr$path" "${path#/usr}" "/usr$real" "${real#/usr}"; do
        dpkg-query -S "$candidate" 2>/dev/null | head -n 1 | cut -d: -f1 && return 0
    done
    return 1
}
packages=()
foreign=()
for library in $needed; do
    # "libfoo.so.1 => /path (0x…)", or for the dynamic loader "/lib64/ld-linux-x86-64.so.2 (0x…)".
    path=$(ldd "$staged" | awk -v lib="$library" '($1 == lib && $2 == "=>") { print $3; exit }
        (substr($1, 1, 1) == "/" && substr($1, length($1) - length(lib)) == "/" lib) { print $1; exit }')
    if [ -z "$path" ] || [ "$path" = "not" ]; then
        die "$library (needed by the binary) is not found on this machine"
    fi
    if package=$(owner_of "$path") && [ -n "$package" ]; then
        packages+=("$package")
        echo "links $library ($path, from $package)"
    else
        foreign+=("$library")
        echo "links $library ($path, from no Debian package)"
    fi
done
if [ ${#foreign[@]} -gt 0 ]; then
    [ "$strict_libraries" = 0 ] || die "the binary needs libraries no Debian package provides: ${foreign[*]}"
    echo "build-deb: WARNING: this package needs ${foreign[*]}, which no Debian package provides" >&2
fi

if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    mkdir -p "$work/src/debian"
    printf 'Source: pipehook\n\nPackage: pipehook\nArchitecture: any\n' > "$work/src/debian/control"
    ignore=()
    [ ${#foreign[@]} -eq 0 ] || ignore=(--ignore-missing-info)
    shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "${ignore[@]}" "$staged" 2>"$work/shlibdeps.err") ||
        { cat "$work/shlibdeps.err" >&2; die "dpkg-shlibdeps failed"; }
    depends=$(printf '%s\n' "$shlibs" | sed -n 's/^shlibs:Depends=//p')
else
    echo "dpkg-shlibdeps (dpkg-dev) is not installed: Depends lists the packages unversioned"
    depends=$(printf '%s\n' "${packages[@]}" | sort -u | paste -sd, - | sed 's/,/, /g')
fi
[ -n "$depends" ] || die "no Depends computed"
depends="$depends, systemd | adduser"

mkdir -p "$root/DEBIAN"
install -m 0755 "$packaging/debian/postinst" "$packaging/debian/prerm" "$packaging/debian/postrm" "$root/DEBIAN/"
echo /etc/pipehook/pipehook.yaml > "$root/DEBIAN/conffiles"
maintainer=$(sed -n 's/^ -- \(.*>\)  .*/\1/p' "$packaging/debian/changelog" | head -n 1)
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: pipehook
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends
Suggests: ffmpeg
Section: net
Priority: optional
Description: Pipevideo webhook receiver
 pipehook receives Pipevideo generation-status webhooks (delivered through
 Svix), verifies their signatures, deduplicates them and keeps a local store in
 which a generation's status only moves forward; routes of download, exec and
 post steps run as durable jobs. The package runs it as the system user
 pipehook under a hardened systemd unit, with its state in /var/lib/pipehook.
EOF

mkdir -p "$out"
deb="$(cd "$out" && pwd)/pipehook_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group -Z"$compression" "$root" "$deb" >/dev/null
echo "Depends: $depends"
echo "binary $(stat -c %s "$staged") bytes stripped; package $(stat -c %s "$deb") bytes"
echo "$deb"
