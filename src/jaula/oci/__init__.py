"""The OCI runtime: config model, validation, lifecycle, init, rootfs, process security."""
