//! Building artifacts from fetched sources, one module an artifact: the kernel with its modules
//! ([`kernel`]), the initramfs that mounts the root ([`initramfs`]), the root filesystem image
//! ([`rootfs`], configured by [`rootfs_config`]). Each builds into a staging directory that the
//! cache publishes; none of them decides what to build or where it comes from.

pub mod initramfs;
pub mod kernel;
pub mod linux;
pub mod ndctl;
pub mod qemu;
pub mod rootfs;
pub mod rootfs_config;
