#!/usr/bin/env bash
# Installs a pipehook .deb, checks what it installed, runs the daemon briefly as its user, then
# purges the package and checks that nothing it made is left (SPEC §9):
#
#   Packaging/test-deb.sh DEB
#
# As root, non-interactive. CAREFUL: a pipehook package already installed is purged first, with
# its configuration, /etc/default/pipehook and /var/lib/pipehook. Prints one line per check
# ("ok" or "FAIL" with the reason) and exits 1 if any check failed (2: wrong usage).
# The system user pipehook stays after the purge (Debian's convention; the package leaves it).
set -uo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DEB" >&2; exit 2; }
deb=$1
[ "$(id -u)" = 0 ] || { echo "test-deb: must run as root (it installs and purges the package)" >&2; exit 2; }
[ -f "$deb" ] || { echo "test-deb: no file $deb" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
exec </dev/null

failures=()
pass() { echo "ok    $1"; }
fail() { echo "FAIL  $1"; failures+=("$1"); }
# check DESCRIPTION COMMAND...: runs the command, its output shown only when it fails.
check() {
    local description=$1 output
    shift
    if output=$("$@" 2>&1); then pass "$description"; else fail "$description"; printf '%s\n' "$output" | sed 's/^/      /'; fi
}
finish() {
    if [ ${#failures[@]} -eq 0 ]; then echo "all checks passed"; exit 0; fi
    echo "${#failures[@]} check(s) failed:"
    printf '  %s\n' "${failures[@]}"
    exit 1
}

work=$(mktemp -d)
chmod 0755 "$work"
daemon_pid=""
cleanup() {
    [ -z "$daemon_pid" ] || kill -KILL "$daemon_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

package=$(dpkg-deb -f "$deb" Package)
version=$(dpkg-deb -f "$deb" Version)
[ "$package" = pipehook ] || { echo "test-deb: $deb is package '$package', not pipehook" >&2; exit 2; }
echo "testing $deb (pipehook $version, Depends: $(dpkg-deb -f "$deb" Depends))"

if dpkg-query -W -f='${db:Status-Status}' pipehook 2>/dev/null | grep -qv '^not-installed$'; then
    echo "purging the pipehook package installed before"
    dpkg --purge pipehook >/dev/null || { echo "test-deb: could not purge the installed pipehook" >&2; exit 1; }
fi

# --- install -------------------------------------------------------------------------------------
if output=$(dpkg -i "$deb" 2>&1 </dev/null); then
    pass "dpkg -i $deb"
else
    fail "dpkg -i $deb"
    printf '%s\n' "$output" | sed 's/^/      /'
    dpkg --purge pipehook >/dev/null 2>&1
    finish
fi

[ "$(/usr/bin/pipehook --version 2>&1)" = "$version" ] && pass "/usr/bin/pipehook --version prints $version" ||
    fail "/usr/bin/pipehook --version prints '$(/usr/bin/pipehook --version 2>&1)', not $version"

user=$(getent passwd pipehook)
IFS=: read -r _ _ uid gid _ home shell <<< "$user"
if [ -n "$user" ] && [ "$uid" -lt 1000 ] && [ "$home" = /var/lib/pipehook ] && [ "${shell##*/}" = nologin ] &&
    [ "$(getent group pipehook | cut -d: -f3)" = "$gid" ]; then
    pass "system user and group pipehook (uid $uid, home $home, shell $shell)"
else
    fail "system user pipehook with group pipehook, home /var/lib/pipehook, nologin (getent: '${user}')"
fi

mode_is() { # PATH "MODE USER GROUP"
    local have
    have=$(stat -c '%a %U %G' "$1" 2>&1)
    [ "$have" = "$2" ] && pass "$1 is $2" || fail "$1 is '$have', not $2"
}
mode_is /var/lib/pipehook "750 pipehook pipehook"
mode_is /etc/default/pipehook "640 root pipehook"
grep -Eq '^PIPEVIDEO_WEBHOOK_SECRET=whsec_[A-Za-z0-9+/]{32}$' /etc/default/pipehook &&
    pass "/etc/default/pipehook holds a generated whsec_ secret" ||
    fail "/etc/default/pipehook holds no PIPEVIDEO_WEBHOOK_SECRET=whsec_<32 base64 characters> line"
dpkg-query -W -f='${Conffiles}\n' pipehook | grep -q '^ /etc/pipehook/pipehook.yaml ' &&
    pass "/etc/pipehook/pipehook.yaml is a conffile" || fail "/etc/pipehook/pipehook.yaml is not a conffile"
for handler in /usr/share/pipehook/handlers/*.sh; do
    [ -f "$handler" ] && [ "$(stat -c %a "$handler")" = 755 ] && pass "$handler is 0755" || fail "$handler is missing or not 0755"
done

# Runs a command as pipehook with the service's environment file (KEY=value lines) and nothing else.
as_pipehook() {
    local environment=() line
    while IFS= read -r line; do
        case "$line" in ''|'#'*) ;; *) environment+=("$line") ;; esac
    done < /etc/default/pipehook
    setpriv --reuid=pipehook --regid=pipehook --init-groups -- \
        env -i PATH=/usr/bin:/bin HOME=/var/lib/pipehook "${environment[@]}" "$@"
}
check "check-config passes on /etc/pipehook/pipehook.yaml as pipehook with /etc/default/pipehook" \
    as_pipehook /usr/bin/pipehook check-config --config /etc/pipehook/pipehook.yaml
# verify exits 0 on unknown or unparsable settings, only warning about them: any output fails.
verify_silently() { local output; output=$(systemd-analyze verify "$1" 2>&1) && [ -z "$output" ] || { printf '%s\n' "$output"; return 1; }; }
check "systemd-analyze verify /lib/systemd/system/pipehook.service (exit 0, no warnings)" \
    verify_silently /lib/systemd/system/pipehook.service
# The settings the package promises, whatever the score (a score can hide one missing).
unit_has() {
    local setting missing=()
    for setting in Type=notify NotifyAccess=main "ExecStart=/usr/bin/pipehook serve --config /etc/pipehook/pipehook.yaml" \
        User=pipehook Group=pipehook EnvironmentFile=-/etc/default/pipehook StateDirectory=pipehook StateDirectoryMode=0750 \
        UMask=0027 NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes CapabilityBoundingSet= \
        MemoryDenyWriteExecute=yes SystemCallFilter=@system-service; do
        grep -qxF -- "$setting" "$1" || missing+=("$setting")
    done
    [ ${#missing[@]} -eq 0 ] || { printf 'missing: %s\n' "${missing[@]}"; return 1; }
}
check "the unit has Type=notify, User=pipehook, the state folder and the sandbox settings" \
    unit_has /lib/systemd/system/pipehook.service
exposure=$(systemd-analyze security --offline=yes /lib/systemd/system/pipehook.service 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: //p')
check "systemd-analyze security --offline=yes --threshold=30 (exposure $exposure)" \
    systemd-analyze security --offline=yes --threshold=30 /lib/systemd/system/pipehook.service

# --- the daemon, briefly, as the service would run it (user, folder, umask 000 to show that
# pipehook tightens it itself), on a free port instead of the configured one ---------------------
sed 's/^listen: .*/listen: "127.0.0.1:0"/' /etc/pipehook/pipehook.yaml > "$work/pipehook.yaml"
chmod 0644 "$work/pipehook.yaml"
: > "$work/daemon.log"
(cd /var/lib/pipehook && umask 000 && exec setpriv --reuid=pipehook --regid=pipehook --init-groups -- \
    env -i PATH=/usr/bin:/bin HOME=/var/lib/pipehook "$(grep '^PIPEVIDEO_WEBHOOK_SECRET=' /etc/default/pipehook)" \
    /usr/bin/pipehook serve --config "$work/pipehook.yaml") >> "$work/daemon.log" 2>&1 &
daemon_pid=$!
port=""
for _ in $(seq 1 200); do
    port=$(sed -n 's/.*"msg":"listening".*"port":"\([0-9]*\)".*/\1/p' "$work/daemon.log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$port" ]; then
    fail "pipehook serve (as pipehook in /var/lib/pipehook) starts listening"
    sed 's/^/      /' "$work/daemon.log"
else
    pass "pipehook serve (as pipehook in /var/lib/pipehook) listens on 127.0.0.1:$port"
    reply=$(exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3 && timeout 10 cat <&3)
    [[ "$reply" == "HTTP/1.1 200"* ]] && pass "GET /healthz answers 200" || fail "GET /healthz answers '${reply%%$'\r'*}'"
    check "a signed webhook (pipehook send, secret from /etc/default/pipehook) is accepted" \
        as_pipehook /usr/bin/pipehook send --config "$work/pipehook.yaml" --url "http://127.0.0.1:$port/webhooks/pipevideo" \
        --generation-id gen_package_test --status in_progress
    mode_is /var/lib/pipehook/pipehook.sqlite "640 pipehook pipehook"
    for extra in /var/lib/pipehook/pipehook.sqlite-wal /var/lib/pipehook/pipehook.sqlite-shm; do
        [ ! -e "$extra" ] || mode_is "$extra" "640 pipehook pipehook"
    done
    mode_is /var/lib/pipehook "750 pipehook pipehook"
    kill -TERM "$daemon_pid"
    for _ in $(seq 1 300); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$daemon_pid" 2>/dev/null; then
        fail "pipehook stops within 30 s of SIGTERM"
    else
        wait "$daemon_pid"
        status=$?
        [ "$status" = 0 ] && pass "pipehook exits 0 on SIGTERM" || { fail "pipehook exits $status on SIGTERM"; sed 's/^/      /' "$work/daemon.log"; }
    fi
fi
[ -z "$daemon_pid" ] || kill -KILL "$daemon_pid" 2>/dev/null
daemon_pid=""

# --- reinstall, remove, purge ---------------------------------------------------------------------
dpkg-query -L pipehook | grep -v '^/\.$' > "$work/files"
secret_before=$(grep '^PIPEVIDEO_WEBHOOK_SECRET=' /etc/default/pipehook)
echo "# edited by test-deb.sh" >> /etc/pipehook/pipehook.yaml
check "dpkg -i again (an upgrade to the same version)" dpkg -i "$deb"
[ "$(grep '^PIPEVIDEO_WEBHOOK_SECRET=' /etc/default/pipehook)" = "$secret_before" ] &&
    pass "the upgrade keeps the secret in /etc/default/pipehook" || fail "the upgrade changed /etc/default/pipehook"
grep -q '^# edited by test-deb.sh$' /etc/pipehook/pipehook.yaml &&
    pass "the upgrade keeps the edited conffile" || fail "the upgrade replaced the edited /etc/pipehook/pipehook.yaml"
check "dpkg -r pipehook" dpkg -r pipehook
[ ! -e /usr/bin/pipehook ] && [ -f /etc/pipehook/pipehook.yaml ] && [ -f /etc/default/pipehook ] && [ -f /var/lib/pipehook/pipehook.sqlite ] &&
    pass "remove deletes the program, keeps the configuration, /etc/default/pipehook and the store" ||
    fail "after dpkg -r: /usr/bin/pipehook must be gone, pipehook.yaml, /etc/default/pipehook and the store kept"
check "dpkg --purge pipehook" dpkg --purge pipehook
dpkg-query -W -f='${db:Status-Status}' pipehook 2>/dev/null | grep -qv '^not-installed$' &&
    fail "pipehook still known to dpkg after the purge" || pass "pipehook no longer known to dpkg"
left=()
while IFS= read -r path; do
    [ -e "$path" ] || [ -L "$path" ] || continue
    # A folder another package also owns (/usr/bin, /etc, /usr/share/doc, ...) stays.
    [ -d "$path" ] && dpkg-query -S "$path" >/dev/null 2>&1 && continue
    left+=("$path")
done < "$work/files"
[ ${#left[@]} -eq 0 ] && pass "every path the package installed is gone ($(wc -l < "$work/files") listed)" ||
    fail "left after the purge: ${left[*]}"
for path in /var/lib/pipehook /etc/pipehook /etc/default/pipehook /etc/default/pipehook.dpkg-tmp \
    /etc/systemd/system/multi-user.target.wants/pipehook.service; do
    [ -e "$path" ] || [ -L "$path" ] && fail "$path is left after the purge" || pass "$path is gone"
done
getent passwd pipehook >/dev/null && echo "note  the system user pipehook stays (Debian's convention)"
finish
