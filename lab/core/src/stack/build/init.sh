#!/bin/busybox sh
# cxl-lab initramfs /init. The contract (kernel command line words it reads) is documented in
# lab/core/src/build/initramfs.rs; keep the two in step.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /run /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "cxl-lab: $*" > /dev/console; }

root=""
rootfstype=ext4
rootflags=""
mode=rw
init=/sbin/init
bare=0
rootwait=30
modshare=modshare
for word in $(cat /proc/cmdline); do
    case "$word" in
        root=*) root="${word#root=}" ;;
        rootfstype=*) rootfstype="${word#rootfstype=}" ;;
        rootflags=*) rootflags="${word#rootflags=}" ;;
        ro) mode=ro ;;
        rw) mode=rw ;;
        init=*) init="${word#init=}" ;;
        cxllab.bare=1) bare=1 ;;
        cxllab.rootwait=*) rootwait="${word#cxllab.rootwait=}" ;;
        cxllab.modshare=*) modshare="${word#cxllab.modshare=}" ;;
    esac
done

failed=0
while read -r module; do
    [ -n "$module" ] || continue
    if ! insmod "/lib/modules/$module"; then
        say "insmod $module failed"
        failed=$((failed + 1))
    fi
done < /etc/cxl-lab/modules

if [ "$bare" = 1 ]; then
    if [ "$failed" = 0 ]; then
        say "bare initramfs ready"
    else
        say "bare initramfs degraded: $failed modules failed to load"
    fi
    sync
    poweroff -f
fi

fail() {
    say "$*"
    say "powering off (add cxllab.rescue=1 for a shell)"
    case " $(cat /proc/cmdline) " in
        *" cxllab.rescue=1 "*) exec sh </dev/console >/dev/console 2>&1 ;;
    esac
    poweroff -f
}

[ -n "$root" ] || fail "no root= on the kernel command line"
case "$root" in
    LABEL=*|UUID=*) device="" ;;
    *) device="$root" ;;
esac
waited=0
while :; do
    [ -z "$device" ] && device="$(findfs "$root" 2>/dev/null)"
    [ -n "$device" ] && [ -b "$device" ] && break
    [ "$waited" -ge "$rootwait" ] && fail "root device $root did not appear in ${rootwait}s"
    case "$root" in LABEL=*|UUID=*) device="" ;; esac
    sleep 1
    waited=$((waited + 1))
done

mount -t "$rootfstype" -o "$mode${rootflags:+,$rootflags}" "$device" /newroot || fail "cannot mount $device ($rootfstype) on /newroot"

# The module tree is mounted before switch_root, so udev in the real root finds the CXL modules
# at coldplug. A machine without the 9p device simply keeps the image's own /lib/modules.
mkdir -p /newroot/lib/modules 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 "$modshare" /newroot/lib/modules \
    || say "no $modshare 9p share: the root's own /lib/modules stays"

[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "$init not found in the root filesystem"
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
umount /sys
umount /proc
exec switch_root /newroot "$init"
