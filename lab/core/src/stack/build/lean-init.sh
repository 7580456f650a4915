#!/bin/sh
# cxl-lab lean init: pid 1 of a lean boot (kernel command line `init=` this file; the initramfs
# has mounted the root read-write and the 9p module share at /lib/modules). What it does and why
# is documented in lab/core/src/stack/build/rootfs_config.rs; keep the two in step.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
export PATH HOME

# Messages on the console carry the kernel's uptime, so a slow step shows.
say() {
    read -r uptime _ < /proc/uptime 2>/dev/null
    echo "cxl-lab: [${uptime:-?}] $*" > /dev/console
}

# Whether DIR is a mount point, with shell builtins only: every program started costs tens of
# milliseconds under TCG.
mounted() {
    while read -r _ dir _; do
        [ "$dir" = "$1" ] && return 0
    done < /proc/mounts
    return 1
}

# mount_once TYPE DIR [OPTIONS]: mounts a kernel file system unless DIR already is a mount point.
mount_once() {
    [ -d "$2" ] || mkdir -p "$2"
    mounted "$2" || mount -t "$1" ${3:+-o "$3"} "$1" "$2" || say "cannot mount $1 on $2"
}

[ -e /proc/self ] || mount -t proc -o nosuid,nodev,noexec proc /proc
say "lean init started"
mount_once sysfs /sys nosuid,nodev,noexec
mount_once devtmpfs /dev mode=0755
mount_once devpts /dev/pts gid=5,mode=620,ptmxmode=000
mount_once tmpfs /dev/shm nosuid,nodev,mode=1777
mount_once tmpfs /run nosuid,nodev,mode=0755
mount_once tmpfs /tmp nosuid,nodev,mode=1777
mount_once debugfs /sys/kernel/debug
mount_once tracefs /sys/kernel/tracing
mount -o remount,rw / || say "cannot make / writable"
# What udev would link: bash's process substitution and tools reading /dev/stdin need these.
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
mkdir -p /run/lock
read -r hostname < /etc/hostname && echo "$hostname" > /proc/sys/kernel/hostname
ip link set lo up 2>/dev/null
# The 9p shares, as fstab names them (the initramfs normally mounted modshare already).
mounted /lib/modules || mounted /usr/lib/modules || mount /lib/modules || say "no module share: the root's own /lib/modules stays"
mounted /mnt/share || mount /mnt/share || say "no data share at /mnt/share"

# Devices that appear from now on (a region's DAX device, a namespace, cxl_test's mock devices, and
# the CXL ports and memdevs that the modules below probe asynchronously) get their drivers as under
# udev: modprobe of each kernel uevent's MODALIAS (udevadm reads the kernel's uevents itself; no
# udevd runs). Started before the modules load, so that their devices are seen.
udevadm monitor --kernel --property | while read -r line; do
    case "$line" in
        MODALIAS=?*) modprobe -bq "${line#MODALIAS=}" ;;
    esac
done &

# What udev loads at coldplug on a CXL machine (the hardware RNG first: without it the kernel's
# random pool takes seconds to fill under TCG, and the agent waits for it), through modprobe as
# udev does; not the rest of coldplug.
say "mounted; loading modules"
modprobe -a @MODULES@ || say "some modules did not load (above)"
# What the monitor may have missed while it started: the devices already on the buses whose
# devices appear late (a minimal coldplug, shell builtins only: a full one costs seconds).
for alias in /sys/bus/cxl/devices/*/modalias /sys/bus/nd/devices/*/modalias /sys/bus/dax/devices/*/modalias; do
    [ -r "$alias" ] && read -r value < "$alias" && [ -n "$value" ] && modprobe -bq "$value"
done

# The agent's port by its name (no udev, so no /dev/virtio-ports/ link).
port=""
tries=0
while [ -z "$port" ] && [ "$tries" -lt 100 ]; do
    for name in /sys/class/virtio-ports/*/name; do
        [ -r "$name" ] && read -r value < "$name" && [ "$value" = "@AGENT_PORT@" ] || continue
        port="${name%/name}"
        port="/dev/${port##*/}"
    done
    [ -n "$port" ] || { sleep 0.1; tries=$((tries + 1)); }
done
if [ -z "$port" ]; then
    say "no virtio port named @AGENT_PORT@: the guest agent cannot start; powering off"
    echo o > /proc/sysrq-trigger
    exec sleep infinity
fi

exec < /dev/null > /dev/console 2>&1
say "starting the guest agent on $port"
# The shell stays pid 1: `wait` reaps every child, the orphans of the agent's commands too, and a
# guest agent that exits is started again.
while :; do
    qemu-ga --method=virtio-serial --path="$port" &
    wait $!
    say "the guest agent exited ($?); starting it again"
    sleep 1
done
