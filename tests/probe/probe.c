/* probe: a small static program run inside containers to report what it sees.
 *
 *   probe info                  one JSON object: ids, caps, namespaces, mounts, fds...
 *   probe fds                   JSON object {fd: readlink target}
 *   probe fdscan                JSON list of the open fds below 4096, found with fcntl (no /proc needed)
 *   probe open PATH [r|w]       "ok" (exit 0) or the errno name (exit 1)
 *   probe mount SRC DST FSTYPE  "ok" or the errno name
 *   probe mknod PATH            char device 1:3 (like /dev/null); "ok" or the errno name
 *   probe sethostname NAME      "ok" or the errno name
 *   probe readlink PATH         the target, or the errno name (exit 1)
 *   probe sleep SECONDS         fractional seconds allowed
 *   probe exit CODE
 *   probe stat PATH             JSON {type, mode, rdev, dev, ino, fstype} (follows links) or the errno name
 *   probe chroot-escape PATH    the classic chroot breakout (mkdir, chroot, chdir("..") x N, chroot("."));
 *                               then open PATH: "ok" or the errno name ("chroot: ENAME" if chroot fails)
 *   probe prowl DIR WORD        attack every other process in /proc (open exe r/w, environ, maps, mem)
 *                               until DIR/stop exists (60 s at most); writes DIR/ready first, then
 *                               DIR/prowl.json: per pid and name, the errno names, "ok", or "LEAK"
 *                               where what it got (exe path, environ, maps) holds WORD
 *
 * Built with `gcc -static -O2` by scripts/build-test-assets; stdout is the only channel.
 * Strings are JSON-escaped; bytes that are not valid UTF-8 come out as \u00XX.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *errname(int err) {
    const char *n = strerrorname_np(err);
    return n ? n : "EUNKNOWN";
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 if invalid. */
static int utf8_len(const unsigned char *s, size_t n) {
    int len, i;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    else if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) len = 3;
    else if (c >= 0xf0 && c <= 0xf4) len = 4;
    else return 0;
    if ((size_t)len > n) return 0;
    for (i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0;               /* overlong */
    if (c == 0xed && s[1] >= 0xa0) return 0;              /* surrogates */
    if (c == 0xf0 && s[1] < 0x90) return 0;               /* overlong */
    if (c == 0xf4 && s[1] >= 0x90) return 0;              /* > U+10FFFF */
    return len;
}

static void jstr_n(const char *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    putchar('"');
    while (i < n) {
        unsigned c = s[i];
        int l;
        if (c == '"' || c == '\\') { putchar('\\'); putchar(c); i++; continue; }
        if (c == '\n') { fputs("\\n", stdout); i++; continue; }
        if (c == '\t') { fputs("\\t", stdout); i++; continue; }
        if (c == '\r') { fputs("\\r", stdout); i++; continue; }
        if (c < 0x20 || c == 0x7f) { printf("\\u%04x", c); i++; continue; }
        l = utf8_len(s + i, n - i);
        if (l == 0) { printf("\\u%04x", c); i++; continue; }
        fwrite(s + i, 1, l, stdout);
        i += l;
    }
    putchar('"');
}

static void jstr(const char *s) { jstr_n(s, strlen(s)); }
static void key(const char *k) { jstr(k); putchar(':'); }

/* Whole file into a malloc'd NUL-terminated buffer; NULL with errno set on failure. */
static char *slurp(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t cap = 4096, n = 0;
    char *buf;
    ssize_t r;
    if (fd < 0) return NULL;
    buf = malloc(cap);
    while (buf && (r = read(fd, buf + n, cap - n - 1)) != 0) {
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno; free(buf); close(fd); errno = e; return NULL;
        }
        n += r;
        if (n + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    close(fd);
    if (!buf) { errno = ENOMEM; return NULL; }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* A file as a JSON list of its lines, or {"error": "ENAME"} if it cannot be read. */
static void file_lines(const char *path) {
    size_t n;
    char *buf = slurp(path, &n), *p, *nl;
    int first = 1;
    if (!buf) { printf("{\"error\":"); jstr(errname(errno)); putchar('}'); return; }
    putchar('[');
    for (p = buf; p < buf + n; p = nl + 1) {
        nl = memchr(p, '\n', buf + n - p);
        if (!nl) nl = buf + n;
        if (!first) putchar(',');
        first = 0;
        jstr_n(p, nl - p);
    }
    putchar(']');
    free(buf);
}

/* Value of "Name:" in /proc/self/status, trimmed; NULL if absent. */
static char *status_field(const char *status, const char *name, char *out, size_t outlen) {
    size_t nl = strlen(name);
    const char *p = status;
    while (p && *p) {
        if (strncmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1, *e;
            size_t l;
            while (*v == ' ' || *v == '\t') v++;
            e = strchr(v, '\n');
            l = e ? (size_t)(e - v) : strlen(v);
            if (l >= outlen) l = outlen - 1;
            memcpy(out, v, l);
            out[l] = 0;
            return out;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NULL;
}

static void print_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int first = 1;
    if (!d) { printf("{\"error\":"); jstr(errname(errno)); putchar('}'); return; }
    putchar('{');
    while ((e = readdir(d))) {
        char path[300], target[PATH_MAX];
        ssize_t l;
        if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d)) continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        l = readlink(path, target, sizeof target - 1);
        if (l < 0) snprintf(target, sizeof target, "?%s", errname(errno));
        else target[l] = 0;
        if (!first) putchar(',');
        first = 0;
        key(e->d_name);
        jstr(target);
    }
    putchar('}');
    closedir(d);
}

static const struct { int res; const char *name; } rlimits[] = {
    {RLIMIT_AS, "RLIMIT_AS"}, {RLIMIT_CORE, "RLIMIT_CORE"}, {RLIMIT_CPU, "RLIMIT_CPU"},
    {RLIMIT_DATA, "RLIMIT_DATA"}, {RLIMIT_FSIZE, "RLIMIT_FSIZE"}, {RLIMIT_LOCKS, "RLIMIT_LOCKS"},
    {RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"}, {RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"},
    {RLIMIT_NICE, "RLIMIT_NICE"}, {RLIMIT_NOFILE, "RLIMIT_NOFILE"}, {RLIMIT_NPROC, "RLIMIT_NPROC"},
    {RLIMIT_RSS, "RLIMIT_RSS"}, {RLIMIT_RTPRIO, "RLIMIT_RTPRIO"}, {RLIMIT_RTTIME, "RLIMIT_RTTIME"},
    {RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"}, {RLIMIT_STACK, "RLIMIT_STACK"},
};

static const char *namespaces[] = {
    "cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts",
};

static int cmd_info(void) {
    char buf[PATH_MAX], field[256];
    struct utsname u;
    gid_t groups[NGROUPS_MAX];
    int ngroups, i;
    mode_t mask;
    char *status;
    long krid;

    /* Before anything else opens an fd, so the fd list is what we were given. */
    printf("{\"fds\":");
    print_fds();

    printf(",\"uid\":%u,\"gid\":%u,\"euid\":%u,\"egid\":%u", getuid(), getgid(), geteuid(), getegid());
    ngroups = getgroups(NGROUPS_MAX, groups);
    printf(",\"groups\":[");
    for (i = 0; i < ngroups; i++) printf("%s%u", i ? "," : "", groups[i]);
    mask = umask(0);
    umask(mask);
    printf("],\"umask\":\"%04o\",\"cwd\":", mask);
    if (getcwd(buf, sizeof buf)) jstr(buf); else printf("null");
    uname(&u);
    printf(",\"hostname\":"); jstr(u.nodename);
    printf(",\"domainname\":"); jstr(u.domainname);
    printf(",\"pid\":%d,\"ppid\":%d,\"env\":[", getpid(), getppid());
    for (i = 0; environ && environ[i]; i++) { if (i) putchar(','); jstr(environ[i]); }

    printf("],\"rlimits\":{");
    for (i = 0; i < (int)(sizeof rlimits / sizeof rlimits[0]); i++) {
        struct rlimit rl;
        if (i) putchar(',');
        key(rlimits[i].name);
        if (getrlimit(rlimits[i].res, &rl) < 0) { printf("null"); continue; }
        printf("{\"soft\":%llu,\"hard\":%llu}", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
    }

    status = slurp("/proc/self/status", NULL);
    printf("},\"status\":{");
    {
        static const char *names[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                      "NoNewPrivs", "Seccomp", "Seccomp_filters"};
        for (i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
            if (i) putchar(',');
            key(names[i]);
            if (status && status_field(status, names[i], field, sizeof field)) jstr(field);
            else printf("null");
        }
    }
    free(status);

    printf("},\"dumpable\":%d", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
    printf(",\"personality\":%d", personality(0xffffffff));
    printf(",\"oom_score_adj\":");
    {
        char *s = slurp("/proc/self/oom_score_adj", NULL);
        if (s) { printf("%d", atoi(s)); free(s); } else printf("null");
    }

    printf(",\"ns\":{");
    for (i = 0; i < (int)(sizeof namespaces / sizeof namespaces[0]); i++) {
        char path[64];
        ssize_t l;
        snprintf(path, sizeof path, "/proc/self/ns/%s", namespaces[i]);
        if (i) putchar(',');
        key(namespaces[i]);
        l = readlink(path, buf, sizeof buf - 1);
        if (l < 0) printf("null");
        else { buf[l] = 0; jstr(buf); }
    }

    printf("},\"uid_map\":"); file_lines("/proc/self/uid_map");
    printf(",\"gid_map\":"); file_lines("/proc/self/gid_map");
    printf(",\"cgroup\":"); file_lines("/proc/self/cgroup");

    /* keyctl(KEYCTL_GET_KEYRING_ID=0, KEY_SPEC_SESSION_KEYRING=-3, create=0) */
    errno = 0;
    krid = syscall(SYS_keyctl, 0, -3, 0);
    printf(",\"session_keyring\":%ld,\"session_keyring_error\":", krid);
    if (krid < 0) jstr(errname(errno)); else printf("null");

    printf(",\"mountinfo\":"); file_lines("/proc/self/mountinfo");
    printf("}\n");
    return 0;
}

static int report(int rc) {
    if (rc < 0) { puts(errname(errno)); return 1; }
    puts("ok");
    return 0;
}

static int cmd_fdscan(void) {
    int fd, first = 1;
    putchar('[');
    for (fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0) { printf("%s%d", first ? "" : ",", fd); first = 0; }
    puts("]");
    return 0;
}

static int cmd_stat(const char *path) {
    struct stat st;
    struct statfs sf;
    const char *type;
    if (stat(path, &st) < 0 || statfs(path, &sf) < 0) { puts(errname(errno)); return 1; }
    switch (st.st_mode & S_IFMT) {
    case S_IFCHR: type = "chr"; break;
    case S_IFBLK: type = "blk"; break;
    case S_IFDIR: type = "dir"; break;
    case S_IFREG: type = "reg"; break;
    case S_IFIFO: type = "fifo"; break;
    case S_IFSOCK: type = "sock"; break;
    default: type = "other";
    }
    printf("{\"type\":\"%s\",\"mode\":\"%04o\",\"rdev\":\"%u:%u\",\"dev\":\"%u:%u\",\"ino\":%llu,\"fstype\":%ld}\n",
           type, st.st_mode & 07777, major(st.st_rdev), minor(st.st_rdev), major(st.st_dev), minor(st.st_dev),
           (unsigned long long)st.st_ino, (long)sf.f_type);
    return 0;
}

static int cmd_chroot_escape(const char *path) {
    int i, fd;
    mkdir("/tmp/.jail", 0700);
    if (chroot("/tmp/.jail") < 0) { printf("chroot: %s\n", errname(errno)); return 2; }
    for (i = 0; i < 256; i++) chdir("..");  /* cwd is outside the new root: walk up past it */
    if (chroot(".") < 0) { printf("chroot: %s\n", errname(errno)); return 2; }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) close(fd);
    return report(fd);
}

/* prowl: what a hostile container does to every process it can see (CVE-2019-5736 class). */
#define PROWL_MAX 256
#define PROWL_KINDS 5
#define PROWL_RESULTS 6
static const char *prowl_kinds[PROWL_KINDS] = {"exe", "exe_w", "environ", "maps", "mem"};
static struct prowled {
    int pid;
    char name[32];
    const char *res[PROWL_KINDS][PROWL_RESULTS];
} prowled[PROWL_MAX];
static int nprowled;
static const char *prowl_word;

static struct prowled *prowl_entry(int pid, const char *name) {
    int i;
    for (i = 0; i < nprowled; i++)
        if (prowled[i].pid == pid && !strcmp(prowled[i].name, name)) return &prowled[i];
    if (nprowled == PROWL_MAX) return NULL;
    prowled[nprowled].pid = pid;
    snprintf(prowled[nprowled].name, sizeof prowled[0].name, "%s", name);
    return &prowled[nprowled++];
}

static void prowl_note(struct prowled *e, int kind, const char *res) {
    int i;
    for (i = 0; i < PROWL_RESULTS && e->res[kind][i]; i++)
        if (!strcmp(e->res[kind][i], res)) return;
    if (i < PROWL_RESULTS) e->res[kind][i] = res;
}

/* Open /proc/PID/WHAT: the errno name, "LEAK" when what it gave away (the exe's path, or the
 * content) holds the word, else "ok". Never writes: an open for writing is the finding. */
static const char *prowl_try(int pid, const char *what, int flags) {
    static char buf[1 << 16];
    char path[64];
    ssize_t n = 0;
    int fd;
    snprintf(path, sizeof path, "/proc/%d/%s", pid, what);
    fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) return errname(errno);
    if (!strcmp(what, "exe")) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        n = readlink(path, buf, sizeof buf - 1);
    } else if (strcmp(what, "mem")) {
        n = read(fd, buf, sizeof buf - 1);
    }
    if (n < 0) { int e = errno; close(fd); return errname(e); }
    close(fd);
    return memmem(buf, n, prowl_word, strlen(prowl_word)) ? "LEAK" : "ok";
}

static void prowl_status(int pid, char *name, size_t len) {
    char spath[64], *status;
    snprintf(spath, sizeof spath, "/proc/%d/status", pid);
    snprintf(name, len, "?");
    if ((status = slurp(spath, NULL))) { status_field(status, "Name", name, len); free(status); }
}

static int cmd_prowl(const char *dir, const char *word) {
    char path[PATH_MAX], tmp[PATH_MAX];
    time_t end = time(NULL) + 60;
    int me = getpid(), i, k, j;
    prowl_word = word;
    snprintf(path, sizeof path, "%s/ready", dir);
    close(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    snprintf(path, sizeof path, "%s/stop", dir);
    while (access(path, F_OK) < 0 && time(NULL) < end) {
        DIR *d = opendir("/proc");
        struct dirent *de;
        if (!d) break;
        while ((de = readdir(d))) {
            int pid = atoi(de->d_name);
            char before[32], after[32];
            const char *res[PROWL_KINDS];
            struct prowled *e;
            if (pid <= 0 || pid == me) continue;
            prowl_status(pid, before, sizeof before);
            res[0] = prowl_try(pid, "exe", O_RDONLY);
            res[1] = prowl_try(pid, "exe", O_WRONLY);
            res[2] = prowl_try(pid, "environ", O_RDONLY);
            res[3] = prowl_try(pid, "maps", O_RDONLY);
            res[4] = prowl_try(pid, "mem", O_RDONLY);
            prowl_status(pid, after, sizeof after);
            if (strcmp(before, after) || !(e = prowl_entry(pid, before))) continue;  /* it exec'd meanwhile */
            for (k = 0; k < PROWL_KINDS; k++) prowl_note(e, k, res[k]);
        }
        closedir(d);
    }
    snprintf(tmp, sizeof tmp, "%s/prowl.json.tmp", dir);
    if (!freopen(tmp, "w", stdout)) return 1;
    putchar('[');
    for (i = 0; i < nprowled; i++) {
        printf("%s{\"pid\":%d,\"name\":", i ? "," : "", prowled[i].pid);
        jstr(prowled[i].name);
        for (k = 0; k < PROWL_KINDS; k++) {
            printf(",\"%s\":[", prowl_kinds[k]);
            for (j = 0; j < PROWL_RESULTS && prowled[i].res[k][j]; j++)
                printf("%s\"%s\"", j ? "," : "", prowled[i].res[k][j]);
            putchar(']');
        }
        putchar('}');
    }
    puts("]");
    fclose(stdout);
    snprintf(path, sizeof path, "%s/prowl.json", dir);
    return rename(tmp, path) < 0;
}

static int usage(void) {
    fputs("usage: probe info|fds|open PATH [r|w]|mount SRC DST FSTYPE|mknod PATH|"
          "sethostname NAME|readlink PATH|sleep SECONDS|exit CODE|fdscan|stat PATH|chroot-escape PATH|"
          "prowl DIR WORD\n", stderr);
    return 2;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);

    if (!strcmp(cmd, "info") && argc == 2) return cmd_info();
    if (!strcmp(cmd, "fds") && argc == 2) { print_fds(); putchar('\n'); return 0; }
    if (!strcmp(cmd, "open") && (argc == 3 || argc == 4)) {
        int flags = (argc == 4 && !strcmp(argv[3], "w")) ? O_WRONLY : O_RDONLY;
        int fd = open(argv[2], flags | O_CLOEXEC);
        if (fd >= 0) close(fd);
        return report(fd);
    }
    if (!strcmp(cmd, "mount") && argc == 5)
        return report(mount(argv[2], argv[3], argv[4], 0, NULL));
    if (!strcmp(cmd, "mknod") && argc == 3)
        return report(mknod(argv[2], S_IFCHR | 0666, makedev(1, 3)));
    if (!strcmp(cmd, "sethostname") && argc == 3)
        return report(sethostname(argv[2], strlen(argv[2])));
    if (!strcmp(cmd, "readlink") && argc == 3) {
        char buf[PATH_MAX];
        ssize_t l = readlink(argv[2], buf, sizeof buf - 1);
        if (l < 0) { puts(errname(errno)); return 1; }
        buf[l] = 0;
        puts(buf);
        return 0;
    }
    if (!strcmp(cmd, "sleep") && argc == 3) {
        double s = strtod(argv[2], NULL);
        struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
        fflush(stdout);
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
        return 0;
    }
    if (!strcmp(cmd, "exit") && argc == 3) return atoi(argv[2]);
    if (!strcmp(cmd, "fdscan") && argc == 2) return cmd_fdscan();
    if (!strcmp(cmd, "stat") && argc == 3) return cmd_stat(argv[2]);
    if (!strcmp(cmd, "chroot-escape") && argc == 3) return cmd_chroot_escape(argv[2]);
    if (!strcmp(cmd, "prowl") && argc == 4) return cmd_prowl(argv[2], argv[3]);
    return usage();
}
