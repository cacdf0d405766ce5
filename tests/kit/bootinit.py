"""The stand-in core's boot scripts: ``/init``, which imitates Tiny Core's boot for the boot
tests (tests/kit/bootkit.py), and the ``/opt/bootsync.sh`` that starts ``/opt/bootlocal.sh``."""

from __future__ import annotations

INIT_SCRIPT = r"""#!/bin/sh
# /init of tcbuild's boot test mirror (tests/kit/bootkit.py): imitates Tiny Core's boot far enough
# for tests (tc-config -> tce-setup -> tce-load -i -b, then bootsync.sh / bootlocal.sh) and
# reports every step on the serial line as "tc-init: ...". A failure prints
# "tc-init: FAILED ..." and powers off. Boot codes: host=NAME, tcinit_wait=SECONDS (how long
# to wait for a background bootlocal.sh before saying so, default 30; the node stays up as long
# as it runs, e.g. a game server it started).
PATH=/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin
export PATH
TTY=/dev/ttyS0
BUILTIN=/tmp/builtin
INSTALLED=/usr/local/tce.installed
LOADED=" "
MOUNTED=""
RAN=" "

say() {
    echo "tc-init: $*" >"$TTY" 2>/dev/null || echo "tc-init: $*"
}

fail() {
    say "FAILED $*"
    sync
    poweroff -f
    sleep 30
    exit 1
}

boot_code() {
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1"=*) echo "${w#*=}"; return 0 ;; esac
    done
    return 1
}

load_module() {
    local name
    name=$(basename "$2")
    name=$(echo "${name%%.ko*}" | tr - _)
    grep -q "^$name " /proc/modules && return 0
    insmod "$1/$2" || fail "to load module $1/$2"
    say "loaded module $2"
}

load_modules() {
    local dir line deps d rel
    dir=/lib/modules/$KVER
    [ -f "$dir/modules.dep" ] || fail "to load modules: no $dir/modules.dep"
    while IFS= read -r line || [ -n "$line" ]; do
        [ -n "$line" ] || continue
        deps=""
        for d in ${line#*:}; do deps="$d $deps"; done
        for rel in $deps ${line%%:*}; do
            load_module "$dir" "$rel"
        done
    done <"$dir/modules.dep"
}

link_tree() {
    local f
    (cd "$1" && find . ! -type d) | while IFS= read -r f; do
        f=${f#./}
        mkdir -p "$(dirname "/$f")" || exit 1
        [ -e "/$f" ] || [ -L "/$f" ] || ln -s "$1/$f" "/$f" || exit 1
    done
}

load_ext() {
    local name src mnt d
    name=$(echo "$1" | tr -d '\r')
    name=${name%.tcz}
    [ -n "$name" ] || return 0
    case "$name" in *-KERNEL) name="${name%-KERNEL}-$KVER" ;; esac
    case "$LOADED" in *" $name "*) return 0 ;; esac
    if [ "$2" = dep ] && [ -e "$INSTALLED/$name" ]; then
        say "$name.tcz is already installed"
        return 0
    fi
    LOADED="$LOADED$name "
    src=$BUILTIN/optional/$name.tcz
    if [ -f "$src.dep" ]; then
        for d in $(tr -d '\r' <"$src.dep"); do
            load_ext "$d" dep
        done
    fi
    [ -f "$src" ] || fail "to mount $src: no such file"
    mnt=/tmp/tcloop/$name
    mkdir -p "$mnt"
    mount -t squashfs -o loop,ro "$src" "$mnt" || fail "to mount $src"
    say "mounted $name.tcz at $mnt"
    MOUNTED="$MOUNTED $name"
    if [ -n "$(ls -A "$mnt")" ]; then
        yes n | cp -ais "$mnt"/* / 2>/dev/null || link_tree "$mnt" || fail "to link $mnt into /"
        say "linked $name.tcz into /"
    fi
    if [ -x "$INSTALLED/$name" ]; then
        echo "$INSTALLED/$name" >>/tmp/setup.lst  # as tce-load -b does
    else
        touch "$INSTALLED/$name"
    fi
}

run_setup() {
    local rc
    case "$RAN" in *" $1 "*) return 0 ;; esac
    RAN="$RAN$1 "
    [ -f "$1" ] && [ -x "$1" ] && [ -s "$1" ] || return 0
    say "running $1"
    "$1"
    rc=$?
    if [ "$rc" -eq 0 ]; then say "$1 finished"; else say "WARNING $1 exited with status $rc"; fi
}

bootlocal_running() {
    local c
    for c in /proc/[0-9]*/cmdline; do
        case "$(tr '\000' ' ' 2>/dev/null <"$c")" in
            */opt/bootlocal.sh* | */opt/bootsync.sh*) return 0 ;;
        esac
    done
    return 1
}

wait_bootlocal() {
    local n=0
    while bootlocal_running; do
        if [ "$n" -eq $((WAIT * 5)) ]; then
            say "bootlocal.sh still running after ${WAIT}s: staying up while it runs"
        fi
        if [ "$n" -lt $((WAIT * 5)) ]; then sleep 0.2; else sleep 5; fi
        n=$((n + 1))
    done
    say "bootlocal.sh finished"
}

run_boot_script() {
    local rc
    [ -x "$1" ] || fail "to run $1: not executable"
    say "running $1"
    "$1"
    rc=$?
    say "$1 exited with status $rc"
}

say "starting (Tiny Core stand-in init)"
mkdir -p /proc /sys /dev
mount -t proc proc /proc || fail "to mount /proc"
mount -t sysfs sysfs /sys || fail "to mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "to mount /dev"
KVER=$(uname -r)
WAIT=$(boot_code tcinit_wait) || WAIT=30
say "kernel $KVER"
if host=$(boot_code host); then hostname "$host" && say "hostname $host"; fi
ifconfig lo 127.0.0.1 up 2>/dev/null
for d in / /tmp /opt /home; do
    say "mode $d $(stat -c '%a %u:%g' "$d")"
done

if [ -f "/lib/modules/$KVER/modules.dep" ]; then
    say "loading modules from /lib/modules/$KVER"
    load_modules
fi
if [ -f "$BUILTIN/onboot.lst" ]; then
    grep -qw squashfs /proc/filesystems || fail "to find squashfs in /proc/filesystems"
    mkdir -p /tmp/tcloop "$INSTALLED"
    for e in $(awk '{ sub(/#.*/, ""); if (NF) print $1 }' "$BUILTIN/onboot.lst" | tr -d '\r'); do
        load_ext "$e"
    done
    say "extensions loaded:$MOUNTED"
else
    say "no $BUILTIN/onboot.lst"
fi

# tce-setup: every script listed in /tmp/setup.lst, once all extensions are there
if [ -f /tmp/setup.lst ]; then
    for s in $(cat /tmp/setup.lst); do
        run_setup "$s"
    done
    rm -f /tmp/setup.lst
fi

if [ -e /opt/bootlocal.sh ] && [ ! -x /opt/bootlocal.sh ]; then
    fail "to run /opt/bootlocal.sh: not executable"
fi
if [ -e /opt/bootsync.sh ]; then
    run_boot_script /opt/bootsync.sh
    wait_bootlocal
elif [ -e /opt/bootlocal.sh ]; then
    run_boot_script /opt/bootlocal.sh
else
    say "no /opt/bootsync.sh or /opt/bootlocal.sh"
fi
say "done"
sync
poweroff -f
sleep 30
"""
"""The boot mirror's ``/init`` (busybox ash)."""

BOOTSYNC_SCRIPT = b"""#!/bin/sh
# Stand-in for Tiny Core's bootsync.sh: runs in the foreground at boot and starts bootlocal.sh.
/opt/bootlocal.sh &
"""
