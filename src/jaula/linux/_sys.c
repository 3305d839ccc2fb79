/* jaula.linux._sys: raw syscall(2) for the runtime's hot path, without ctypes.
 *
 * `import ctypes` costs ~2.5 ms here, a tenth of a container start; this module costs a dlopen.
 * Optional: scripts/setup builds it with gcc; without it jaula.linux.libc falls back to ctypes.
 * Keep the interface tiny and stable (VERSION): the ctypes fallback implements the same one.
 *
 *   syscall(nr, *args) -> int   up to 6 arguments, each an int (passed as a long; ints above
 *                               LONG_MAX as their unsigned 64-bit pattern), None (NULL), bytes
 *                               (a read-only pointer, NUL-terminated) or a writable buffer such
 *                               as a bytearray (a pointer the kernel may fill). Returns the
 *                               kernel's result, or -errno on failure (never raises for errno).
 *   seccomp_filter(flags, prog) -> int   seccomp(SECCOMP_SET_MODE_FILTER, flags, &sock_fprog) for a
 *                               classic-BPF program (bytes, 8 per instruction): a struct holding
 *                               a pointer, which syscall() cannot pass. The result or -errno.
 *                               (VERSION 2)
 *   clone3(flags, cgroup_fd) -> int   a fork through clone3(2) with `flags` (CLONE_NEW*) and, when
 *                               cgroup_fd >= 0, CLONE_INTO_CGROUP into that cgroup2 folder: the
 *                               child's pid in the parent, 0 in the child, or -errno. Python's
 *                               before/after fork work is done as os.fork does it. The kernel puts
 *                               the child in the cgroup at its birth under the cgroup threadgroup
 *                               lock taken for reading; moving a process by a write to cgroup.procs
 *                               takes it for writing, an RCU grace period (~10 ms). glibc has no
 *                               clone3 wrapper: in the child its thread descriptor keeps the
 *                               parent's tid, so raise() and pthread_kill() would miss there
 *                               (Python's own code does not use them). (VERSION 3)
 *                               With CLONE_PARENT in `flags` the child is its caller's parent's
 *                               (jaula.oci.zygote), and clone3 then wants no exit signal of its
 *                               own: the caller's is used. (VERSION 4)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_ARGS 6

static PyObject *sys_syscall(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long nr, a[MAX_ARGS] = {0};
    Py_buffer views[MAX_ARGS];
    int held[MAX_ARGS] = {0};
    PyObject *result = NULL;
    long ret;
    int err;

    if (nargs < 1 || nargs > MAX_ARGS + 1) {
        PyErr_Format(PyExc_TypeError, "syscall: takes a number and at most %d arguments", MAX_ARGS);
        return NULL;
    }
    nr = PyLong_AsLong(args[0]);
    if (nr == -1 && PyErr_Occurred())
        return NULL;
    for (Py_ssize_t i = 1; i < nargs; i++) {
        PyObject *o = args[i];
        if (o == Py_None) {
            a[i - 1] = 0;
        } else if (PyLong_Check(o)) {
            int overflow = 0;
            a[i - 1] = PyLong_AsLongAndOverflow(o, &overflow);
            if (overflow > 0)
                a[i - 1] = (long)PyLong_AsUnsignedLongMask(o);
            else if (overflow < 0) {
                PyErr_Format(PyExc_OverflowError, "syscall: argument %zd is below LONG_MIN", i);
                goto out;
            }
            if (PyErr_Occurred())
                goto out;
        } else if (PyBytes_Check(o)) {
            a[i - 1] = (long)PyBytes_AS_STRING(o);
        } else if (PyObject_GetBuffer(o, &views[i - 1], PyBUF_WRITABLE) == 0) {
            held[i - 1] = 1;
            a[i - 1] = (long)views[i - 1].buf;
        } else {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "syscall: argument %zd must be int, None, bytes or a writable buffer, not %s",
                         i, Py_TYPE(o)->tp_name);
            goto out;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    ret = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    err = errno;
    Py_END_ALLOW_THREADS
    result = PyLong_FromLong(ret == -1 ? -err : ret);
out:
    for (int i = 0; i < MAX_ARGS; i++)
        if (held[i])
            PyBuffer_Release(&views[i]);
    return result;
}

static PyObject *sys_seccomp_filter(PyObject *self, PyObject *args)
{
    unsigned int flags;
    Py_buffer prog;
    struct sock_fprog fprog;
    long ret;
    int err;

    if (!PyArg_ParseTuple(args, "Iy*:seccomp_filter", &flags, &prog))
        return NULL;
    if (prog.len == 0 || prog.len % sizeof(struct sock_filter) || prog.len / sizeof(struct sock_filter) > BPF_MAXINSNS) {
        PyBuffer_Release(&prog);
        PyErr_SetString(PyExc_ValueError, "seccomp_filter: a program is 1 to BPF_MAXINSNS instructions of 8 bytes");
        return NULL;
    }
    fprog.len = (unsigned short)(prog.len / sizeof(struct sock_filter));
    fprog.filter = (struct sock_filter *)prog.buf;
    ret = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog);
    err = errno;
    PyBuffer_Release(&prog);
    return PyLong_FromLong(ret == -1 ? -err : ret);
}

static PyObject *sys_clone3(PyObject *self, PyObject *args)
{
    unsigned long long flags;
    int cgroup_fd;
    struct clone_args ca;
    long pid;
    int err;

    if (!PyArg_ParseTuple(args, "Ki:clone3", &flags, &cgroup_fd))
        return NULL;
    memset(&ca, 0, sizeof ca);
    ca.flags = flags;
    ca.exit_signal = (flags & CLONE_PARENT) ? 0 : SIGCHLD;
    if (cgroup_fd >= 0) {
        ca.flags |= CLONE_INTO_CGROUP;
        ca.cgroup = (unsigned long long)cgroup_fd;
    }
    PyOS_BeforeFork();
    pid = syscall(SYS_clone3, &ca, sizeof ca);
    err = errno;
    if (pid == 0) {
        PyOS_AfterFork_Child();
        return PyLong_FromLong(0);
    }
    PyOS_AfterFork_Parent();
    return PyLong_FromLong(pid < 0 ? -err : pid);
}

static PyMethodDef methods[] = {
    {"syscall", (PyCFunction)(void (*)(void))sys_syscall, METH_FASTCALL,
     "syscall(nr, *args) -> result, or -errno on failure"},
    {"seccomp_filter", sys_seccomp_filter, METH_VARARGS,
     "seccomp_filter(flags, prog) -> result of seccomp(SECCOMP_SET_MODE_FILTER), or -errno"},
    {"clone3", sys_clone3, METH_VARARGS,
     "clone3(flags, cgroup_fd) -> child's pid, 0 in the child, or -errno: a fork with clone flags, into a cgroup2 folder"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sys", "Raw syscall(2) for jaula's hot path (see _sys.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__sys(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "VERSION", 4) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
