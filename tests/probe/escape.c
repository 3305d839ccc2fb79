/* escape: the escape attempts of tests/security, run as root inside an instance.
 *
 *   escape all [KEY=VALUE...]   every attempt, one line each: NAME<TAB>STATUS<TAB>DETAIL
 *   escape tiocsti              only the TIOCSTI attempt (run it on a terminal)
 *   escape reboot PIDNS         reboot(RESTART), only when /proc/self/ns/pid's inode is not PIDNS
 *   escape forkbomb SECONDS     fork as fast as it can for SECONDS (children wait for the end, then
 *                               exit): "forkbomb<TAB>forks N<TAB>failed M ENAME"
 *   escape hog MIB              allocate and touch MIB MiB: "hog<TAB>touched N MiB" (if not killed)
 *   escape fill PATH MIB        write 1 MiB blocks to PATH up to MIB: "fill<TAB>N MiB<TAB>ENAME|ok"
 *   escape inodes DIR MAX       create empty files in DIR up to MAX: "inodes<TAB>N<TAB>ENAME|ok"
 *   escape latency COUNT        COUNT fork+exit+wait rounds: "latency<TAB>median US<TAB>max US"
 *   escape phased T0 PERIOD SECONDS WORKERS ATTACK [ARG [PATH]]
 *                               from CLOCK_MONOTONIC ns T0, PERIOD ms phases for SECONDS: in even
 *                               ones WORKERS run ATTACK (hog MIB, forkbomb, fill MIB PATH, burn)
 *                               again and again, odd ones are quiet: "phased<TAB>ATTACK<TAB>counts"
 *   escape latency-phased T0 PERIOD SECONDS GAP_US
 *                               fork+exit+wait every GAP_US on the same schedule, each sample
 *                               sorted by phase: "on|off<TAB>median US<TAB>p90 US<TAB>samples"
 *
 * STATUS: "blocked" (the kernel or a filter refused: DETAIL is the errno name), "contained" (it
 * worked on the instance's own objects only, and the helper checked that: DETAIL says how), or
 * "ESCAPE" (it reached something outside: DETAIL says what). The host checks what it can see
 * itself (its hostname, clock, core_pattern, a process of its own...) in the tests.
 *
 * KEYS given by the host: marker=PATH (a host file that must stay unreachable), pid=N (a host
 * process), other=N (the host pid of another instance's process), netns=, pidns=, mntns=,
 * userns= (the host's namespace inodes), abstract=NAME (an
 * abstract unix socket the host listens on), ifs=a,b (the host's interface names).
 *
 * Built with `gcc -static -O2` by scripts/build-test-assets. Each attempt that must not change
 * anything even if it worked writes a value that is harmless or the current one back.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_alg.h>
#include <linux/io_uring.h>
#include <linux/kexec.h>
#include <linux/nsfs.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <linux/userfaultfd.h>
#include <linux/vm_sockets.h>
#include <linux/netlink.h>
#include <linux/audit.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/acct.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static const char *marker = "", *abstract_name = "", *host_ifs = "";
static long host_pid = -1, other_pid = -1;
static unsigned long host_ns[4];  /* net, pid, mnt, user */
static const char *ns_names[4] = {"net", "pid", "mnt", "user"};

static const char *en(int err) {
    const char *n = strerrorname_np(err);
    return n ? n : "EUNKNOWN";
}

static void rep(const char *name, const char *status, const char *fmt, ...) {
    va_list ap;
    printf("%s\t%s\t", name, status);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* A call that must fail: blocked with its errno, or ESCAPE. */
static void must_fail(const char *name, long r, int err) {
    if (r < 0) rep(name, "blocked", "%s", en(err));
    else rep(name, "ESCAPE", "succeeded (returned %ld)", r);
}
#define FAIL(name, call) do { errno = 0; long r_ = (long)(call); must_fail(name, r_, errno); } while (0)

/* Write `val` to a kernel file: blocked if open or write fails. */
static void must_not_write(const char *name, const char *path, const char *val) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { rep(name, "blocked", "open %s", en(errno)); return; }
    ssize_t n = write(fd, val, strlen(val));
    int err = errno;
    close(fd);
    if (n < 0) rep(name, "blocked", "write %s", en(err));
    else rep(name, "ESCAPE", "wrote %zd bytes to %s", n, path);
}

/* Read a kernel file that must not give anything: blocked if open/read fails or it reads empty. */
static void must_not_read(const char *name, const char *path) {
    char buf[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) { rep(name, "blocked", "open %s", en(errno)); return; }
    ssize_t n = read(fd, buf, sizeof buf);
    int err = errno;
    close(fd);
    if (n < 0) rep(name, "blocked", "read %s", en(err));
    else if (n == 0) rep(name, "blocked", "reads empty (masked)");
    else rep(name, "ESCAPE", "read %zd bytes of %s", n, path);
}

static int read_text(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    return (int)n;
}

static unsigned long ns_inode(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (unsigned long)st.st_ino : 0;
}

static int marker_visible(void) {
    return marker[0] && access(marker, F_OK) == 0;
}

/* ---- mounts ------------------------------------------------------------------------------- */

static void mount_fs(const char *fstype, const char *opts) {
    char name[64], dir[64];
    snprintf(name, sizeof name, "mount_%s", fstype);
    snprintf(dir, sizeof dir, "/tmp/escape-%s", fstype);
    mkdir(dir, 0700);
    if (mount(fstype, dir, fstype, 0, opts) < 0) rep(name, "blocked", "%s", en(errno));
    else { rep(name, "ESCAPE", "mounted %s", fstype); umount2(dir, MNT_DETACH); }
    rmdir(dir);
}

static void remount_rw(const char *name, const char *path) {
    if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND, NULL) < 0) rep(name, "blocked", "%s", en(errno));
    else rep(name, "contained", "read-only flag cleared inside; the writes after it are refused");
}

static void mount_attempts(void) {
    static const char *kernel_fs[] = {"debugfs", "tracefs", "securityfs", "bpf", "configfs", "pstore",
                                      "efivarfs", "fusectl", "hugetlbfs", "autofs", "ext4", "xfs", "btrfs",
                                      "vfat", "iso9660", "nfs", NULL};
    for (int i = 0; kernel_fs[i]; i++) mount_fs(kernel_fs[i], NULL);

    /* A fresh procfs would show what the masks hide: the kernel refuses it while /proc has overmounts. */
    mkdir("/tmp/escape-proc", 0700);
    if (mount("proc", "/tmp/escape-proc", "proc", 0, "hidepid=0") < 0)
        rep("mount_proc_unmasked", "blocked", "%s", en(errno));
    else {
        /* the masks are not locked (made inside the instance's own user namespace): what the
         * kernel itself refuses under them is what counts */
        static const char *hidden[] = {"kcore", "timer_list", "sched_debug", "latency_stats", "timer_stats",
                                       "acpi/wakeup", "scsi/scsi", NULL};
        char got[512] = "";
        for (int i = 0; hidden[i]; i++) {
            char p[128], b[64];
            snprintf(p, sizeof p, "/tmp/escape-proc/%s", hidden[i]);
            int fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
            if (fd >= 0 && read(fd, b, sizeof b) > 0) snprintf(got + strlen(got), sizeof got - strlen(got), "%s ", hidden[i]);
            if (fd >= 0) close(fd);
        }
        int fd2 = open("/tmp/escape-proc/sysrq-trigger", O_WRONLY | O_CLOEXEC);
        if (fd2 >= 0) { strcat(got, "sysrq-trigger(w) "); close(fd2); }
        if (got[0]) rep("mount_proc_unmasked", "ESCAPE", "a fresh procfs reads %s", got);
        else rep("mount_proc_unmasked", "contained", "a fresh procfs mounts, but kcore, timer_list, sysrq-trigger... are refused by the kernel");
        umount2("/tmp/escape-proc", MNT_DETACH);
    }
    rmdir("/tmp/escape-proc");

    mkdir("/tmp/escape-sysfs", 0700);
    if (mount("sysfs", "/tmp/escape-sysfs", "sysfs", 0, NULL) < 0)
        rep("mount_sysfs_unmasked", "blocked", "%s", en(errno));
    else {
        int fd = open("/tmp/escape-sysfs/kernel/uevent_helper", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) { rep("mount_sysfs_unmasked", "ESCAPE", "uevent_helper writable"); close(fd); }
        else rep("mount_sysfs_unmasked", "contained", "mounted, uevent_helper refused (%s)", en(errno));
        umount2("/tmp/escape-sysfs", MNT_DETACH);
    }
    rmdir("/tmp/escape-sysfs");

    /* Bind of /: only the instance's own root can be named; the host's marker must not appear. */
    mkdir("/tmp/escape-root", 0700);
    if (mount("/", "/tmp/escape-root", NULL, MS_BIND | MS_REC, NULL) < 0)
        rep("bind_root", "blocked", "%s", en(errno));
    else {
        char p[4200];
        snprintf(p, sizeof p, "/tmp/escape-root%s", marker);
        if (marker[0] && access(p, F_OK) == 0) rep("bind_root", "ESCAPE", "host marker visible through the bind");
        else rep("bind_root", "contained", "the instance's own root only");
        umount2("/tmp/escape-root", MNT_DETACH);
    }
    rmdir("/tmp/escape-root");

    /* Mounts must not propagate to the host: the host checks its mount table for this one. */
    mkdir("/tmp/escape-propagation", 0700);
    mount(NULL, "/", NULL, MS_REC | MS_SHARED, NULL);
    if (mount("escape-propagation", "/tmp/escape-propagation", "tmpfs", 0, "size=64k") < 0)
        rep("mount_propagation", "blocked", "%s", en(errno));
    else rep("mount_propagation", "contained", "tmpfs mounted inside (the host checks its own table)");
    /* left mounted on purpose until the host looked: the instance is deleted after */

    /* The read-only flags of mounts made inside the instance's own user namespace are not locked
     * (mount_namespaces(7)): root inside may clear them. The kernel's ownership checks must still
     * refuse every write that reaches outside: the /proc/sys, /sys and cgroup attempts run after this. */
    remount_rw("remount_sys_rw", "/sys");
    remount_rw("remount_proc_sys_rw", "/proc/sys");
    remount_rw("remount_cgroup_rw", "/sys/fs/cgroup");
    static const char *ctl[] = {"memory", "pids", "cpu,cpuacct", "devices", "freezer", NULL};
    for (int i = 0; ctl[i]; i++) {
        char p[128];
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s", ctl[i]);
        mount(NULL, p, NULL, MS_REMOUNT | MS_BIND, NULL);
    }

    /* Unmasking: even where a mask comes off, what was under it must stay closed. */
    if (umount2("/proc/kcore", MNT_DETACH) < 0) rep("unmask_kcore", "blocked", "umount %s", en(errno));
    else {
        int fd = open("/proc/kcore", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) { rep("unmask_kcore", "ESCAPE", "kcore opened after umount"); close(fd); }
        else rep("unmask_kcore", "contained", "umount worked, open %s", en(errno));
    }
    if (umount2("/proc/sysrq-trigger", MNT_DETACH) < 0) rep("unmask_sysrq", "blocked", "umount %s", en(errno));
    else must_not_write("unmask_sysrq", "/proc/sysrq-trigger", "h");
    if (umount2("/proc/sys", MNT_DETACH) < 0) rep("unmask_proc_sys", "blocked", "umount %s", en(errno));
    else {
        char cur[512];
        if (read_text("/proc/sys/kernel/core_pattern", cur, sizeof cur) < 0) strcpy(cur, "core");
        must_not_write("unmask_proc_sys", "/proc/sys/kernel/core_pattern", cur);
    }
}

/* ---- devices ------------------------------------------------------------------------------ */

static void device_attempts(void) {
    struct { const char *name; mode_t type; int maj, min; } nodes[] = {
        {"mknod_mem", S_IFCHR, 1, 1}, {"mknod_kmem", S_IFCHR, 1, 2}, {"mknod_port", S_IFCHR, 1, 4},
        {"mknod_sda", S_IFBLK, 8, 0}, {"mknod_nvme", S_IFBLK, 259, 0}, {"mknod_loop0", S_IFBLK, 7, 0},
    };
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, "/tmp/escape-%s", nodes[i].name);
        if (mknod(path, nodes[i].type | 0600, makedev(nodes[i].maj, nodes[i].min)) < 0) {
            rep(nodes[i].name, "blocked", "%s", en(errno));
            continue;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) { rep(nodes[i].name, "ESCAPE", "made and opened %d:%d", nodes[i].maj, nodes[i].min); close(fd); }
        else rep(nodes[i].name, "contained", "made, open %s", en(errno));
        unlink(path);
    }
    static const char *devs[] = {"/dev/mem", "/dev/kmem", "/dev/port", "/dev/sda", "/dev/vda", "/dev/nvme0n1",
                                 "/dev/loop0", "/dev/kmsg", "/dev/dm-0", NULL};
    for (int i = 0; devs[i]; i++) {
        char name[64];
        snprintf(name, sizeof name, "open_%s", devs[i] + 5);
        int fd = open(devs[i], O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) rep(name, "blocked", "%s", en(errno));
        else { rep(name, "ESCAPE", "opened %s", devs[i]); close(fd); }
    }
    /* Any block device node at all under /dev */
    DIR *d = opendir("/dev");
    int found = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        struct stat st;
        char p[300];
        snprintf(p, sizeof p, "/dev/%s", e->d_name);
        if (lstat(p, &st) == 0 && S_ISBLK(st.st_mode)) { found++; rep("block_device_nodes", "ESCAPE", "%s", p); }
    }
    if (d) closedir(d);
    if (!found) rep("block_device_nodes", "blocked", "no block device in /dev");
}

/* ---- kernel-global syscalls --------------------------------------------------------------- */

static void syscall_attempts(void) {
    FAIL("init_module", syscall(SYS_init_module, "", 0UL, ""));
    int fd = open("/bin/busybox", O_RDONLY | O_CLOEXEC);
    FAIL("finit_module", syscall(SYS_finit_module, fd, "", 0));
    if (fd >= 0) close(fd);
    FAIL("delete_module", syscall(SYS_delete_module, "jaula_escape_none", O_NONBLOCK));
    FAIL("kexec_load", syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0UL));
    FAIL("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0UL, "", KEXEC_FILE_NO_INITRAMFS));
    /* CAD_OFF changes what ctrl-alt-del does on the host; a child pid namespace answers EINVAL */
    FAIL("reboot_cad_off", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, NULL));
    FAIL("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1));
    FAIL("add_key", syscall(SYS_add_key, "user", "jaula-escape", "x", 1, -3));
    FAIL("request_key", syscall(SYS_request_key, "user", "jaula-escape", NULL, 0));
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_ARRAY;
    attr.key_size = 4;
    attr.value_size = 4;
    attr.max_entries = 1;
    FAIL("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    struct perf_event_attr pe;
    memset(&pe, 0, sizeof pe);
    pe.type = PERF_TYPE_SOFTWARE;
    pe.size = sizeof pe;
    pe.config = PERF_COUNT_SW_CPU_CLOCK;
    long r = syscall(SYS_perf_event_open, &pe, -1, 0, -1, 0);  /* every process on cpu 0 */
    must_fail("perf_event_open_cpu", r, errno);
    if (r >= 0) close((int)r);
    r = syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0);       /* itself */
    must_fail("perf_event_open_self", r, errno);
    if (r >= 0) close((int)r);
    r = syscall(SYS_userfaultfd, O_CLOEXEC);
    must_fail("userfaultfd", r, errno);
    if (r >= 0) close((int)r);
    struct io_uring_params up;
    memset(&up, 0, sizeof up);
    r = syscall(SYS_io_uring_setup, 4, &up);
    must_fail("io_uring_setup", r, errno);
    if (r >= 0) close((int)r);
    r = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    must_fail("socket_vsock", r, errno);
    if (r >= 0) close((int)r);
    r = socket(AF_ALG, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    must_fail("socket_alg", r, errno);
    if (r >= 0) close((int)r);
    FAIL("swapon", swapon("/tmp/escape-swap", 0));
    FAIL("swapoff", swapoff("/tmp/escape-swap"));
    FAIL("acct", acct("/tmp/escape-acct"));
    unlink("/tmp/escape-acct");
    FAIL("iopl", iopl(3));
    FAIL("ioperm", ioperm(0x80, 1, 1));
    /* the kernel's log: the host's, not the instance's */
    char buf[256];
    FAIL("syslog_read", syscall(SYS_syslog, 3 /* READ_ALL */, buf, sizeof buf));
    FAIL("syslog_clear", syscall(SYS_syslog, 5 /* CLEAR */, NULL, 0));

    /* shocker (2014): open_by_handle_at with a guessed handle of the host's root inode */
    struct { unsigned int bytes; int type; unsigned char h[8]; } fh = {8, 1, {2, 0, 0, 0, 0, 0, 0, 0}};
    r = syscall(SYS_open_by_handle_at, AT_FDCWD, &fh, O_RDONLY | O_CLOEXEC);
    must_fail("open_by_handle_at", r, errno);
    if (r >= 0) close((int)r);
}

/* ---- time, host name ---------------------------------------------------------------------- */

static void time_attempts(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    tv.tv_sec += 86400;  /* a day ahead: the host test would see it at once */
    FAIL("settimeofday", settimeofday(&tv, NULL));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 86400;
    FAIL("clock_settime", clock_settime(CLOCK_REALTIME, &ts));
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    tx.modes = ADJ_OFFSET_SINGLESHOT;
    tx.offset = 1000;  /* 1 ms */
    FAIL("adjtimex", adjtimex(&tx));
    memset(&tx, 0, sizeof tx);
    tx.modes = ADJ_OFFSET_SINGLESHOT;
    tx.offset = 1000;
    FAIL("clock_adjtime", syscall(SYS_clock_adjtime, CLOCK_REALTIME, &tx));
    /* its own UTS namespace: this works, and the host's name must stay (the host checks) */
    if (sethostname("escaped-host", 12) < 0) rep("sethostname", "blocked", "%s", en(errno));
    else rep("sethostname", "contained", "the instance's own UTS namespace (the host checks its name)");
    if (setdomainname("escaped-domain", 14) < 0) rep("setdomainname", "blocked", "%s", en(errno));
    else rep("setdomainname", "contained", "the instance's own UTS namespace (the host checks)");
}

/* ---- /proc and /sys ----------------------------------------------------------------------- */

static void write_current(const char *name, const char *path) {
    char cur[512];
    if (read_text(path, cur, sizeof cur) < 0) strcpy(cur, "0\n");
    must_not_write(name, path, cur);
}

static void proc_sys_attempts(void) {
    must_not_write("sysrq_trigger", "/proc/sysrq-trigger", "h");  /* h: help, harmless if it went through */
    write_current("sysctl_kernel_sysrq", "/proc/sys/kernel/sysrq");
    must_not_write("core_pattern", "/proc/sys/kernel/core_pattern", "|/tmp/escape-core %p");
    write_current("sysctl_kernel_modprobe", "/proc/sys/kernel/modprobe");
    write_current("sysctl_kernel_panic", "/proc/sys/kernel/panic");
    write_current("sysctl_kernel_hostname", "/proc/sys/kernel/hostname");
    write_current("sysctl_kernel_randomize_va_space", "/proc/sys/kernel/randomize_va_space");
    write_current("sysctl_vm_overcommit_memory", "/proc/sys/vm/overcommit_memory");
    must_not_write("sysctl_vm_drop_caches", "/proc/sys/vm/drop_caches", "1");
    write_current("sysctl_net_core_rmem_max", "/proc/sys/net/core/rmem_max");
    /* per network namespace: writable where /proc/sys is; the host checks its own value */
    char cur[64];
    if (read_text("/proc/sys/net/ipv4/ip_forward", cur, sizeof cur) < 0) strcpy(cur, "0\n");
    int w = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
    if (w < 0) rep("sysctl_net_ipv4_ip_forward", "blocked", "open %s", en(errno));
    else if (write(w, cur[0] == '1' ? "0\n" : "1\n", 2) < 0) rep("sysctl_net_ipv4_ip_forward", "blocked", "write %s", en(errno));
    else rep("sysctl_net_ipv4_ip_forward", "contained", "its own network namespace's (the host checks its own)");
    if (w >= 0) close(w);
    write_current("sysctl_fs_file_max", "/proc/sys/fs/file-max");
    write_current("sys_uevent_helper", "/sys/kernel/uevent_helper");
    must_not_write("sys_power_state", "/sys/power/state", "jaula-invalid");
    write_current("sys_kernel_mm_thp", "/sys/kernel/mm/transparent_hugepage/enabled");
    write_current("sys_class_net_lo_mtu", "/sys/class/net/lo/mtu");
    write_current("sys_module_param", "/sys/module/printk/parameters/time");
    must_not_read("read_kcore", "/proc/kcore");
    must_not_read("read_proc_keys", "/proc/keys");
    must_not_read("read_timer_list", "/proc/timer_list");
    must_not_read("read_sched_debug", "/proc/sched_debug");
    must_not_read("read_sys_firmware", "/sys/firmware/acpi/tables/DSDT");
    /* kernel addresses: zeros unless the reader has CAP_SYSLOG in the host's namespace */
    char ks[256];
    if (read_text("/proc/kallsyms", ks, sizeof ks) <= 0) rep("kallsyms_addresses", "blocked", "unreadable");
    else if (strncmp(ks, "0000000000000000", 16) == 0) rep("kallsyms_addresses", "blocked", "addresses read as zero");
    else rep("kallsyms_addresses", "ESCAPE", "kernel addresses shown: %.16s", ks);
    /* OOM immunity would make the host kill others first */
    int fd = open("/proc/self/oom_score_adj", O_RDWR | O_CLOEXEC);
    cur[0] = 0;
    if (fd >= 0) {
        ssize_t n = read(fd, cur, sizeof cur - 1);
        cur[n > 0 ? n : 0] = 0;
        if (atoi(cur) <= -1000) rep("oom_score_adj", "ESCAPE", "already -1000");
        else if (write(fd, "-1000", 5) < 0) rep("oom_score_adj", "blocked", "%s", en(errno));
        else rep("oom_score_adj", "ESCAPE", "set to -1000 from %d", atoi(cur));
        close(fd);
    } else rep("oom_score_adj", "blocked", "open %s", en(errno));
}

/* ---- cgroups ------------------------------------------------------------------------------ */

static void own_cgroup_write(const char *name, const char *path, const char *val) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { rep(name, "blocked", "open %s", en(errno)); return; }
    ssize_t n = write(fd, val, strlen(val));
    int err = errno;
    close(fd);
    char self[4096];
    int outside = read_text("/proc/self/cgroup", self, sizeof self) > 0 && strstr(self, "..") != NULL;
    if (n < 0) rep(name, "blocked", "write %s", en(err));
    else if (outside) rep(name, "ESCAPE", "moved above its cgroup namespace's root");
    else rep(name, "contained", "its own cgroup (delegated): still at its namespace's root");
}

static void cgroup_attempts(void) {
    /* the v1 mounts are read-only; their release_agent is the host's (CVE-2022-0492) */
    static const char *ctl[] = {"memory", "pids", "cpu", "devices", "freezer", "rdma", NULL};
    char path[256];
    int tried = 0;
    for (int i = 0; ctl[i] && !tried; i++) {
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s/release_agent", ctl[i]);
        if (access(path, F_OK) == 0) { write_current("release_agent_existing", path); tried = 1; }
    }
    if (!tried) rep("release_agent_existing", "blocked", "no release_agent visible");
    /* a new v1 mount of one hierarchy, then its release_agent (the CVE's own steps) */
    mkdir("/tmp/escape-cg", 0700);
    if (mount("cgroup", "/tmp/escape-cg", "cgroup", 0, "rdma") < 0 &&
        mount("cgroup", "/tmp/escape-cg", "cgroup", 0, "memory") < 0)
        rep("release_agent_new_mount", "blocked", "mount %s", en(errno));
    else {
        must_not_write("release_agent_new_mount", "/tmp/escape-cg/release_agent", "/tmp/escape-agent");
        umount2("/tmp/escape-cg", MNT_DETACH);
    }
    rmdir("/tmp/escape-cg");
    /* the parent's cgroup.procs: the cgroup namespace makes the instance's cgroup its root */
    char self[4096];
    int n = read_text("/proc/self/cgroup", self, sizeof self);
    int outside = 0;
    for (char *line = strtok(n > 0 ? self : NULL, "\n"); line; line = strtok(NULL, "\n")) {
        char *p = strrchr(line, ':');
        if (p && strcmp(p + 1, "/") != 0 && strncmp(p + 1, "/init.scope", 11) != 0 && strncmp(p + 1, "/", 1) == 0
            && strstr(p + 1, "..")) outside = 1;
    }
    if (outside) rep("cgroup_namespace", "ESCAPE", "cgroup paths above the namespace's root shown");
    else rep("cgroup_namespace", "blocked", "paths start at the instance's own cgroup");
    must_not_write("cgroup_parent_procs", "/sys/fs/cgroup/pids/../cgroup.procs", "1");
    snprintf(path, sizeof path, "%d", getpid());
    /* its own cgroup: read-only by default; with security.nesting delegated (containers inside move
     * their processes), which is no way out: the limits above are the ones tried next */
    own_cgroup_write("cgroup_own_procs", "/sys/fs/cgroup/pids/cgroup.procs", path);
    own_cgroup_write("cgroup_own_tasks", "/sys/fs/cgroup/memory/tasks", path);
    must_not_write("cgroup_raise_pids_max", "/sys/fs/cgroup/pids/pids.max", "max");
    must_not_write("cgroup_raise_memory_limit", "/sys/fs/cgroup/memory/memory.limit_in_bytes", "-1");
    must_not_write("cgroup_devices_allow", "/sys/fs/cgroup/devices/devices.allow", "a");
}

/* ---- processes and namespaces ------------------------------------------------------------- */

static void process_attempts(void) {
    if (host_pid > 0) {
        /* a host process by its host pid: in this pid namespace it is not there (or is another) */
        char p[64];
        snprintf(p, sizeof p, "/proc/%ld/ns/pid", host_pid);
        unsigned long ino = ns_inode(p);
        if (ino && ino == host_ns[1]) rep("host_pid_visible", "ESCAPE", "pid %ld is in the host's pid namespace", host_pid);
        else rep("host_pid_visible", "blocked", "%s", ino ? "another process of the instance" : "no such pid");
        if (!ino) {
            FAIL("kill_host_pid", kill((pid_t)host_pid, SIGKILL));
            FAIL("ptrace_host_pid", ptrace(PTRACE_ATTACH, (pid_t)host_pid, 0, 0));
            FAIL("pidfd_open_host_pid", syscall(SYS_pidfd_open, host_pid, 0));
            struct iovec l = {p, 8}, rm = {(void *)0x400000, 8};
            FAIL("process_vm_readv_host", process_vm_readv((pid_t)host_pid, &l, 1, &rm, 1, 0));
        }
    }
    /* pid 1 must be the instance's own init */
    unsigned long own_pid = ns_inode("/proc/self/ns/pid"), init_pid = ns_inode("/proc/1/ns/pid");
    if (host_ns[1] && (own_pid == host_ns[1] || init_pid == host_ns[1])) rep("host_pid1", "ESCAPE", "the host's pid namespace");
    else rep("host_pid1", "blocked", "pid 1 is the instance's init (pid ns %lu)", init_pid);
    /* kill(-1): every process it can see; the host's must not be among them (the host checks its own) */
    /* (not sent: it would also end this helper) - instead count processes outside its pid ns */
    DIR *d = opendir("/proc");
    struct dirent *e;
    int seen = 0, foreign = 0, foreign_ns = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        seen++;
        for (int k = 0; k < 4; k++) {
            char p[300];
            snprintf(p, sizeof p, "/proc/%s/ns/%s", e->d_name, ns_names[k]);
            unsigned long ino = ns_inode(p);
            if (ino && ino == host_ns[k]) { foreign++; break; }
        }
    }
    if (d) closedir(d);
    if (foreign) rep("host_namespaces_via_proc", "ESCAPE", "%d processes in a host namespace", foreign);
    else rep("host_namespaces_via_proc", "blocked", "%d processes, all in the instance's namespaces", seen);
    /* the namespaces of every fd it holds: a leaked host namespace fd would be the way back */
    d = opendir("/proc/self/fd");
    while (d && (e = readdir(d))) {
        char p[300];
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        for (int k = 0; k < 4; k++) {
            unsigned long ino = ns_inode(p);
            if (ino && ino == host_ns[k]) foreign_ns++;
        }
    }
    if (d) closedir(d);
    if (foreign_ns) rep("setns_leaked_fd", "ESCAPE", "%d fds of host namespaces", foreign_ns);
    else rep("setns_leaked_fd", "blocked", "no fd of a host namespace");
    /* setns to the user namespace's parent: NS_GET_PARENT needs to own it */
    int ufd = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
    long r = ufd >= 0 ? ioctl(ufd, NS_GET_PARENT) : -1;
    must_fail("ns_get_parent_userns", r, errno);
    if (r >= 0) { setns((int)r, CLONE_NEWUSER) == 0 ? rep("setns_parent_userns", "ESCAPE", "joined") : rep("setns_parent_userns", "blocked", "%s", en(errno)); close((int)r); }
    if (ufd >= 0) close(ufd);
    int nfd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    r = nfd >= 0 ? ioctl(nfd, NS_GET_USERNS) : -1;
    if (r >= 0) {
        long pr = ioctl((int)r, NS_GET_PARENT);
        must_fail("ns_get_parent_of_netns_owner", pr, errno);
        if (pr >= 0) close((int)pr);
        close((int)r);
    } else rep("ns_get_parent_of_netns_owner", "blocked", "%s", en(errno));
    if (nfd >= 0) close(nfd);
    /* leaked fds: this exec'd process and the init hold only what they should */
    int extra = 0;
    char list[1024] = "";
    d = opendir("/proc/self/fd");
    while (d && (e = readdir(d))) {
        int fdn = atoi(e->d_name);
        if (e->d_name[0] == '.' || fdn <= 2 || fdn == dirfd(d)) continue;
        char p[300], t[300];
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(p, t, sizeof t - 1);
        t[n > 0 ? n : 0] = 0;
        extra++;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%d=%s ", fdn, t);
    }
    if (d) closedir(d);
    if (extra) rep("leaked_fds_exec", "ESCAPE", "%s", list);
    else rep("leaked_fds_exec", "blocked", "only 0, 1, 2");
    extra = 0;
    list[0] = 0;
    d = opendir("/proc/1/fd");
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[300], t[300];
        snprintf(p, sizeof p, "/proc/1/fd/%s", e->d_name);
        ssize_t n = readlink(p, t, sizeof t - 1);
        t[n > 0 ? n : 0] = 0;
        /* 0-2 are its console (a pty, pipes, or the console log the host keeps): a file, never a
         * folder (a folder's fd is a way out, CVE-2024-21626); anything above 2 came from the host */
        struct stat st;
        int fdn = atoi(e->d_name);
        if (fdn <= 2 && stat(p, &st) == 0 && !S_ISDIR(st.st_mode)) continue;
        extra++;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s=%s ", e->d_name, t);
    }
    if (d) closedir(d);
    if (extra) rep("leaked_fds_init", "ESCAPE", "%s", list);
    else rep("leaked_fds_init", "blocked", "only its console on 0, 1, 2");
    /* the realtime scheduler and negative nice starve the neighbours */
    struct sched_param sp = {.sched_priority = 50};
    FAIL("sched_fifo", sched_setscheduler(0, SCHED_FIFO, &sp));
    FAIL("nice_minus_20", setpriority(PRIO_PROCESS, 0, -20));
    FAIL("ioprio_realtime", syscall(SYS_ioprio_set, 1 /* PROCESS */, 0, (1 << 13) | 0 /* RT, level 0 */));
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max != RLIM_INFINITY) {
        rl.rlim_max += 1;
        FAIL("raise_nofile_hard", setrlimit(RLIMIT_NOFILE, &rl));
    } else rep("raise_nofile_hard", "ESCAPE", "hard limit already infinite");
}

/* ---- another instance's processes, the working folders (CVE-2024-21626) ------------------- */

/* From the folder open as `dirfd`, climb 64 levels: at the instance's root ".." stays there; a
 * folder outside it (a leaked host fd, a cwd left on the host) climbs to the host's root, where
 * the host's marker path resolves. */
static int climbs_out(int dirfd) {
    if (dirfd < 0 || !marker[0]) return 0;
    char up[64 * 3 + 1] = "";
    for (int i = 0; i < 64; i++) strcat(up, "../");
    int top = openat(dirfd, up, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (top < 0) return 0;
    int found = faccessat(top, marker + 1, F_OK, 0) == 0;
    close(top);
    return found;
}

static void folder_inside(const char *name, const char *path) {
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { rep(name, "blocked", "open %s", en(errno)); return; }
    char t[512];
    snprintf(t, sizeof t, "/proc/self/fd/%d", fd);
    char where[512];
    ssize_t n = readlink(t, where, sizeof where - 1);
    where[n > 0 ? n : 0] = 0;
    if (climbs_out(fd)) rep(name, "ESCAPE", "%s (%s) leads to the host's root", path, where);
    else rep(name, "contained", "%s is %s, inside the instance's root", path, where);
    close(fd);
}

static void other_instance_attempts(void) {
    folder_inside("cwd_exec_inside", "/proc/self/cwd");
    folder_inside("cwd_init_inside", "/proc/1/cwd");
    folder_inside("root_init_inside", "/proc/1/root");
    if (other_pid <= 0) {
        rep("kill_other_instance", "ESCAPE", "no other=PID given: not tried");
        return;
    }
    /* another instance's process by its host pid: not in this pid namespace (or another of its own) */
    char p[64];
    snprintf(p, sizeof p, "/proc/%ld/ns/pid", other_pid);
    unsigned long ino = ns_inode(p), own = ns_inode("/proc/self/ns/pid");
    if (ino && ino != own) { rep("kill_other_instance", "ESCAPE", "pid %ld is in another pid namespace", other_pid); return; }
    if (ino) {  /* the same number is one of this instance's own: nothing to try on the other's */
        rep("kill_other_instance", "blocked", "pid %ld is this instance's own", other_pid);
        rep("ptrace_other_instance", "blocked", "pid %ld is this instance's own", other_pid);
        rep("pidfd_other_instance", "blocked", "pid %ld is this instance's own", other_pid);
        return;
    }
    FAIL("kill_other_instance", kill((pid_t)other_pid, SIGKILL));
    FAIL("ptrace_other_instance", ptrace(PTRACE_ATTACH, (pid_t)other_pid, 0, 0));
    FAIL("pidfd_other_instance", syscall(SYS_pidfd_open, other_pid, 0));
}

/* ---- lxcfs: a FUSE file system of the host, its files bound over /proc's ------------------- */

static void lxcfs_attempts(void) {
    /* writes through its files: each is the host's lxcfs process answering */
    must_not_write("lxcfs_write_meminfo", "/proc/meminfo", "MemTotal: 1 kB\n");
    must_not_write("lxcfs_write_cpuinfo", "/proc/cpuinfo", "processor : 0\n");
    must_not_write("lxcfs_write_uptime", "/proc/uptime", "0.00 0.00\n");
    must_not_write("lxcfs_write_sys_cpu_online", "/sys/devices/system/cpu/online", "0\n");
    /* the read-only flag of the bind is not locked (made in its own user namespace): cleared,
     * the write must still be refused (by lxcfs, or the file's owner: the host's root) */
    if (mount(NULL, "/proc/meminfo", NULL, MS_REMOUNT | MS_BIND, NULL) < 0)
        rep("lxcfs_remount_rw_write", "blocked", "remount %s", en(errno));
    else {
        int fd = open("/proc/meminfo", O_WRONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? write(fd, "x\n", 2) : -1;
        int err = errno;
        if (fd >= 0) close(fd);
        if (n >= 0) rep("lxcfs_remount_rw_write", "ESCAPE", "wrote /proc/meminfo after a read-write remount");
        else rep("lxcfs_remount_rw_write", "contained", "remounted; %s %s", fd < 0 ? "open" : "write", en(err));
    }
    /* mount over it, or take it off: only this instance's own view changes */
    int fd = open("/tmp/escape-meminfo", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) { write(fd, "MemTotal: 1 kB\n", 15); close(fd); }
    if (mount("/tmp/escape-meminfo", "/proc/meminfo", NULL, MS_BIND, NULL) < 0)
        rep("lxcfs_mount_over", "blocked", "%s", en(errno));
    else {
        rep("lxcfs_mount_over", "contained", "its own mount namespace's /proc/meminfo (the host checks lxcfs's answers)");
        umount2("/proc/meminfo", MNT_DETACH);
    }
    unlink("/tmp/escape-meminfo");
    /* fuse itself: no /dev/fuse (the device cgroup and the allowlist), no FUSE mount without it */
    fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) rep("lxcfs_fuse_device_open", "blocked", "%s", en(errno));
    else { rep("lxcfs_fuse_device_open", "ESCAPE", "opened /dev/fuse"); close(fd); }
    if (mknod("/tmp/escape-fuse", S_IFCHR | 0600, makedev(10, 229)) < 0) rep("lxcfs_fuse_mknod", "blocked", "%s", en(errno));
    else {
        fd = open("/tmp/escape-fuse", O_RDWR | O_CLOEXEC);
        if (fd >= 0) { rep("lxcfs_fuse_mknod", "ESCAPE", "made and opened 10:229"); close(fd); }
        else rep("lxcfs_fuse_mknod", "contained", "made, open %s", en(errno));
        unlink("/tmp/escape-fuse");
    }
    mkdir("/tmp/escape-fusemnt", 0700);
    if (mount("escape", "/tmp/escape-fusemnt", "fuse", 0, "fd=0,rootmode=40000,user_id=0,group_id=0") < 0)
        rep("lxcfs_mount_fuse", "blocked", "%s", en(errno));
    else { rep("lxcfs_mount_fuse", "ESCAPE", "a FUSE mount on fd 0"); umount2("/tmp/escape-fusemnt", MNT_DETACH); }
    rmdir("/tmp/escape-fusemnt");
    /* the host's fuse connections (abort one: every instance's /proc/meminfo dies) */
    DIR *d = opendir("/sys/fs/fuse/connections");
    struct dirent *e;
    int tried = 0, opened = 0, err = ENOENT;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300];
        snprintf(path, sizeof path, "/sys/fs/fuse/connections/%s/abort", e->d_name);
        tried++;
        int w = open(path, O_WRONLY | O_CLOEXEC);
        if (w >= 0) { opened++; close(w); } else err = errno;  /* opened, never written */
    }
    if (d) closedir(d);
    if (opened) rep("lxcfs_fuse_abort", "ESCAPE", "%d of the host's FUSE connections could be aborted", opened);
    else rep("lxcfs_fuse_abort", "blocked", "%d connections seen, %s", tried, tried ? en(err) : "none");
}

/* ---- a new user namespace, pivot_root and chroot ------------------------------------------ */

static int in_child(int (*fn)(void)) {
    pid_t pid = fork();
    if (pid == 0) _exit(fn());
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int nested_userns(void) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) { rep("nested_userns_caps", "blocked", "unshare %s", en(errno)); return 0; }
    int fd = open("/proc/self/setgroups", O_WRONLY); if (fd >= 0) { write(fd, "deny", 4); close(fd); }
    fd = open("/proc/self/uid_map", O_WRONLY); if (fd >= 0) { write(fd, "0 0 1", 5); close(fd); }
    fd = open("/proc/self/gid_map", O_WRONLY); if (fd >= 0) { write(fd, "0 0 1", 5); close(fd); }
    /* root again, with every capability in the new namespace: none of them reaches further out */
    int got = 0;
    char what[256] = "";
    mkdir("/tmp/escape-nested", 0700);
    if (mount("debugfs", "/tmp/escape-nested", "debugfs", 0, NULL) == 0) { got++; strcat(what, "debugfs "); }
    if (mknod("/tmp/escape-nested-mem", S_IFCHR | 0600, makedev(1, 1)) == 0) { got++; strcat(what, "mknod "); unlink("/tmp/escape-nested-mem"); }
    if (syscall(SYS_init_module, "", 0UL, "") == 0) { got++; strcat(what, "init_module "); }
    struct timeval tv; gettimeofday(&tv, NULL);
    if (settimeofday(&tv, NULL) == 0) { got++; strcat(what, "settimeofday "); }
    int w = open("/proc/sys/kernel/core_pattern", O_WRONLY);
    if (w >= 0) { got++; strcat(what, "core_pattern "); close(w); }
    if (got) rep("nested_userns_caps", "ESCAPE", "%s", what);
    else rep("nested_userns_caps", "contained", "root of a new user namespace: debugfs, mknod, modules, clock, core_pattern refused");
    return 0;
}

static int pivot_games(void) {
    if (unshare(CLONE_NEWNS) < 0) { rep("pivot_root_dot", "blocked", "unshare %s", en(errno)); return 0; }
    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    if (chdir("/") < 0 || syscall(SYS_pivot_root, ".", ".") < 0) { rep("pivot_root_dot", "blocked", "pivot_root %s", en(errno)); return 0; }
    umount2(".", MNT_DETACH);
    chdir("/");
    for (int i = 0; i < 64; i++) chdir("..");
    if (marker_visible()) rep("pivot_root_dot", "ESCAPE", "host marker visible after pivot_root(., .)");
    else rep("pivot_root_dot", "contained", "pivot_root worked; still the instance's tree");
    return 0;
}

static int chroot_double(void) {
    mkdir("/tmp/escape-chroot", 0700);
    if (chroot("/tmp/escape-chroot") < 0) { rep("chroot_double", "blocked", "chroot %s", en(errno)); return 0; }
    for (int i = 0; i < 64; i++) chdir("..");
    chroot(".");
    if (marker_visible()) rep("chroot_double", "ESCAPE", "host marker visible after the double chroot");
    else rep("chroot_double", "contained", "the instance's root is the real top");
    return 0;
}

/* ---- network ------------------------------------------------------------------------------ */

static void net_attempts(void) {
    if (abstract_name[0]) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        size_t n = strlen(abstract_name);
        memcpy(a.sun_path + 1, abstract_name, n);
        if (connect(s, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) < 0)
            rep("abstract_unix_host", "blocked", "%s", en(errno));
        else rep("abstract_unix_host", "ESCAPE", "connected to the host's @%s", abstract_name);
        close(s);
    }
    /* raw sockets work in its own netns: only its own interfaces must be there */
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    struct if_nameindex *ifs = if_nameindex(), *i;
    char seen[512] = "";
    int host = 0;
    for (i = ifs; i && i->if_index; i++) {
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s ", i->if_name);
        char list[512];
        snprintf(list, sizeof list, ",%s,", host_ifs);
        char key[IF_NAMESIZE + 3];
        snprintf(key, sizeof key, ",%s,", i->if_name);
        if (strcmp(i->if_name, "lo") != 0 && strstr(list, key)) host++;
    }
    if (ifs) if_freenameindex(ifs);
    if (host) rep("raw_socket_host_ifs", "ESCAPE", "host interfaces visible: %s", seen);
    else rep("raw_socket_host_ifs", s >= 0 ? "contained" : "blocked", "interfaces: %s", seen);
    if (s >= 0) close(s);
    s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_AUDIT);
    if (s < 0) rep("netlink_audit", "blocked", "socket %s", en(errno));
    else {
        struct { struct nlmsghdr h; char pad[16]; } m = {{.nlmsg_len = NLMSG_LENGTH(0), .nlmsg_type = AUDIT_GET,
                                                          .nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK}, {0}};
        struct sockaddr_nl k = {.nl_family = AF_NETLINK};
        char ack[256];
        if (sendto(s, &m, m.h.nlmsg_len, 0, (struct sockaddr *)&k, sizeof k) < 0) rep("netlink_audit", "blocked", "send %s", en(errno));
        else {
            ssize_t n = recv(s, ack, sizeof ack, MSG_DONTWAIT);
            struct nlmsghdr *h = (struct nlmsghdr *)ack;
            int err = (n >= (ssize_t)sizeof *h && h->nlmsg_type == NLMSG_ERROR) ? -((struct nlmsgerr *)NLMSG_DATA(h))->error : 0;
            if (n < 0) rep("netlink_audit", "blocked", "recv %s", en(errno));
            else if (err) rep("netlink_audit", "blocked", "%s", en(err));
            else rep("netlink_audit", "ESCAPE", "the audit subsystem answered");
        }
        close(s);
    }
}

/* ---- terminals ---------------------------------------------------------------------------- */

static void tiocsti_attempt(void) {
    char c = '#';
    FAIL("tiocsti_own_terminal", ioctl(0, TIOCSTI, &c));
    int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) rep("tiocsti_console", "blocked", "open %s", en(errno));
    else { FAIL("tiocsti_console", ioctl(fd, TIOCSTI, &c)); close(fd); }
}

/* ---- exhaustion inside the limits ---------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int forkbomb(double seconds) {
    double end = now_s() + seconds;
    long forks = 0, failed = 0;
    int err = 0;
    while (now_s() < end) {
        pid_t pid = fork();
        if (pid == 0) {  /* each child forks too, until the deadline: a real bomb, with an end */
            while (now_s() < end) {
                pid_t g = fork();
                if (g == 0) { while (now_s() < end) usleep(10000); _exit(0); }
                if (g < 0) usleep(1000);
            }
            while (wait(NULL) > 0) {}
            _exit(0);
        }
        if (pid < 0) { failed++; err = errno; usleep(1000); }
        else forks++;
    }
    while (wait(NULL) > 0) {}
    printf("forkbomb\tforks %ld\tfailed %ld %s\n", forks, failed, err ? en(err) : "none");
    return 0;
}

static int hog(long mib) {
    long done = 0;
    for (; done < mib; done++) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 0x5a, 1 << 20);
    }
    printf("hog\ttouched %ld MiB\n", done);
    return 0;
}

static int fill(const char *path, long mib) {
    static char block[1 << 20];
    memset(block, 0x5a, sizeof block);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) { printf("fill\t0 MiB\topen %s\n", en(errno)); return 0; }
    long done = 0;
    int err = 0;
    for (; done < mib; done++) {
        if (write(fd, block, sizeof block) != (ssize_t)sizeof block) { err = errno ? errno : ENOSPC; break; }
    }
    if (!err && fsync(fd) < 0) err = errno;
    close(fd);
    printf("fill\t%ld MiB\t%s\n", done, err ? en(err) : "ok");
    return 0;
}

static int inodes(const char *dir, long max) {
    long n = 0;
    int err = 0;
    char p[4200];
    for (; n < max; n++) {
        snprintf(p, sizeof p, "%s/%ld", dir, n);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) { err = errno; break; }
        close(fd);
    }
    printf("inodes\t%ld\t%s\n", n, err ? en(err) : "ok");
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int latency(int count) {
    double *t = calloc((size_t)count, sizeof *t);
    for (int i = 0; i < count; i++) {
        double s0 = now_s();
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        t[i] = (now_s() - s0) * 1e6;
    }
    qsort(t, (size_t)count, sizeof *t, cmp_double);
    printf("latency\t%.0f\t%.0f\n", t[count / 2], t[count - 1]);
    return 0;
}

/* ---- attacks against a neighbour, interleaved with quiet phases ---------------------------- *
 * Both sides read the host's CLOCK_MONOTONIC (a time namespace moves only the boot clock) and
 * the same schedule: from T0, phases of PERIOD ms, even ones "on" (the attacker attacks), odd
 * ones "off" (it sleeps). The neighbour samples all along and sorts each sample by its phase:
 * a steady load of the host's other work falls on both sides alike. */

static long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until_ns(long long t) {
    struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

/* One attack until `end` (CLOCK_MONOTONIC ns); counts what it did in runs and kills. */
static void attack_until(const char *what, long arg, const char *path, long long end, long *runs, long *kills) {
    if (!strcmp(what, "forkbomb")) {
        pid_t p = fork();
        if (p == 0) { int devnull = open("/dev/null", O_WRONLY); dup2(devnull, 1); _exit(forkbomb((end - mono_ns()) / 1e9)); }
        int st = 0;
        if (p > 0) waitpid(p, &st, 0);
        (*runs)++;
        return;
    }
    while (mono_ns() < end) {
        pid_t p = fork();
        if (p == 0) {
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            if (!strcmp(what, "hog")) _exit(hog(arg));
            if (!strcmp(what, "fill")) { fill(path, arg); unlink(path); _exit(0); }
            if (!strcmp(what, "burn")) { while (mono_ns() < end) {} _exit(0); }
            _exit(2);
        }
        if (p < 0) { usleep(1000); continue; }
        int st = 0;
        waitpid(p, &st, 0);
        (*runs)++;
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) (*kills)++;
    }
}

/* escape phased T0_NS PERIOD_MS SECONDS WORKERS ATTACK [ARG [PATH]] */
static int phased(long long t0, long period_ms, double seconds, int workers, const char *what, long arg, const char *path) {
    long long period = period_ms * 1000000LL, stop = t0 + (long long)(seconds * 1e9);
    long runs = 0, kills = 0, phases = 0;
    for (long k = 0; t0 + k * period < stop; k += 2) {
        long long start = t0 + k * period, end = start + period;
        sleep_until_ns(start);
        pid_t kids[64];
        int n = workers < 1 ? 1 : workers > 64 ? 64 : workers;
        int pipefd[2];
        if (pipe(pipefd) < 0) return 1;
        for (int w = 0; w < n; w++) {
            kids[w] = fork();
            if (kids[w] == 0) {
                long r = 0, kl = 0;
                close(pipefd[0]);
                attack_until(what, arg, path, end, &r, &kl);
                long both[2] = {r, kl};
                write(pipefd[1], both, sizeof both);
                _exit(0);
            }
        }
        close(pipefd[1]);
        for (int w = 0; w < n; w++) {
            long both[2];
            if (kids[w] > 0) waitpid(kids[w], NULL, 0);
            if (read(pipefd[0], both, sizeof both) == (ssize_t)sizeof both) { runs += both[0]; kills += both[1]; }
        }
        close(pipefd[0]);
        phases++;
    }
    printf("phased\t%s\tphases %ld runs %ld killed %ld\n", what, phases, runs, kills);
    return 0;
}

/* escape latency-phased T0_NS PERIOD_MS SECONDS GAP_US: fork+exit+wait samples, one every GAP_US,
 * sorted by phase; the first quarter of each phase is left out (the attack starting or ending).
 * Prints "on<TAB>median US<TAB>p90 US<TAB>N" and the same for "off". */
static int latency_phased(long long t0, long period_ms, double seconds, long gap_us) {
    long long period = period_ms * 1000000LL, stop = t0 + (long long)(seconds * 1e9);
    size_t cap = (size_t)(seconds * 1e6 / (gap_us > 0 ? gap_us : 1)) + 16, n[2] = {0, 0};
    double *t[2] = {calloc(cap, sizeof(double)), calloc(cap, sizeof(double))};
    sleep_until_ns(t0);
    for (long long now = mono_ns(); now < stop; now = mono_ns()) {
        long long k = (now - t0) / period, in = (now - t0) % period;
        double s0 = now_s();
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        if (pid > 0) waitpid(pid, NULL, 0);
        double us = (now_s() - s0) * 1e6;
        int side = (int)(k % 2);  /* 0: on, 1: off */
        long long end = mono_ns();
        /* a sample counts when it started and ended in the same phase, past its first quarter */
        if (in >= period / 4 && (end - t0) / period == k && n[side] < cap) t[side][n[side]++] = us;
        if (gap_us > 0) usleep((useconds_t)gap_us);
    }
    static const char *names[2] = {"on", "off"};
    for (int side = 0; side < 2; side++) {
        if (!n[side]) { printf("%s\t0\t0\t0\n", names[side]); continue; }
        qsort(t[side], n[side], sizeof(double), cmp_double);
        printf("%s\t%.0f\t%.0f\t%zu\n", names[side], t[side][n[side] / 2], t[side][n[side] * 9 / 10], n[side]);
    }
    return 0;
}

static void parse_keys(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        char *v = strchr(argv[i], '=');
        if (!v) continue;
        *v++ = 0;
        if (!strcmp(argv[i], "marker")) marker = v;
        else if (!strcmp(argv[i], "pid")) host_pid = atol(v);
        else if (!strcmp(argv[i], "other")) other_pid = atol(v);
        else if (!strcmp(argv[i], "abstract")) abstract_name = v;
        else if (!strcmp(argv[i], "ifs")) host_ifs = v;
        else for (int k = 0; k < 4; k++) if (!strcmp(argv[i], ns_names[k]) || (!strncmp(argv[i], ns_names[k], strlen(ns_names[k])) && !strcmp(argv[i] + strlen(ns_names[k]), "ns"))) host_ns[k] = strtoul(v, NULL, 10);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: escape all|tiocsti|reboot PIDNS [KEY=VALUE...]\n"); return 2; }
    if (!strcmp(argv[1], "tiocsti")) { tiocsti_attempt(); return 0; }
    if (!strcmp(argv[1], "reboot")) {
        /* reboot(2) from a child pid namespace only ends that namespace's init; refuse anywhere else */
        unsigned long own = ns_inode("/proc/self/ns/pid");
        if (argc < 3 || !own || own == strtoul(argv[2], NULL, 10)) { rep("reboot_restart", "skip", "not in a child pid namespace"); return 3; }
        FAIL("reboot_restart", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_RESTART, NULL));
        FAIL("reboot_power_off", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF, NULL));
        return 0;
    }
    if (!strcmp(argv[1], "forkbomb") && argc > 2) return forkbomb(atof(argv[2]));
    if (!strcmp(argv[1], "hog") && argc > 2) return hog(atol(argv[2]));
    if (!strcmp(argv[1], "fill") && argc > 3) return fill(argv[2], atol(argv[3]));
    if (!strcmp(argv[1], "inodes") && argc > 3) return inodes(argv[2], atol(argv[3]));
    if (!strcmp(argv[1], "latency") && argc > 2) return latency(atoi(argv[2]));
    if (!strcmp(argv[1], "phased") && argc > 6)
        return phased(atoll(argv[2]), atol(argv[3]), atof(argv[4]), atoi(argv[5]), argv[6], argc > 7 ? atol(argv[7]) : 0,
                      argc > 8 ? argv[8] : "/dev/shm/fill");
    if (!strcmp(argv[1], "latency-phased") && argc > 5)
        return latency_phased(atoll(argv[2]), atol(argv[3]), atof(argv[4]), atol(argv[5]));
    if (strcmp(argv[1], "all")) { fprintf(stderr, "escape: unknown command %s\n", argv[1]); return 2; }
    parse_keys(argc, argv);
    if (getuid() != 0) { fprintf(stderr, "escape: run it as root inside the instance\n"); return 2; }
    mount_attempts();  /* first: it makes /sys, /proc/sys and the cgroups writable where it can */
    device_attempts();
    syscall_attempts();
    time_attempts();
    proc_sys_attempts();
    cgroup_attempts();
    process_attempts();
    net_attempts();
    other_instance_attempts();
    lxcfs_attempts();
    tiocsti_attempt();
    in_child(nested_userns);
    in_child(pivot_games);
    in_child(chroot_double);
    rep("done", "contained", "all attempts ran");
    return 0;
}
