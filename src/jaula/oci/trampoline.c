/*
 * The exec trampoline of jaula-runtime: execve(argv[1], argv + 2, envp), nothing else.
 *
 * Why: the container's program is exec'd by the runtime's init, a host Python. If that program is
 * "#!/proc/self/exe" (or a link to it) the kernel resolves /proc/self/exe to the init's own
 * executable: the host's interpreter would run inside the container, which could then keep an fd
 * of it and overwrite it (CVE-2019-5736). So the init first execs this trampoline from a sealed
 * memfd; /proc/self/exe is then that memfd, which nobody can write.
 *
 * argv[0] must be MAGIC: run any other way (as a script interpreter, say) it refuses.
 * No libc: built with -nostdlib -static, a few hundred bytes; scripts/gen_trampoline.py embeds it.
 */
#define MAGIC "jaula-exec-trampoline"

#if defined(__x86_64__)
#define NR_write 1
#define NR_execve 59
#define NR_exit 60
static long sys3(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}
__asm__(".text\n.global _start\n_start:\n\txor %rbp,%rbp\n\tmov %rsp,%rdi\n\tand $-16,%rsp\n\tcall cstart\n\thlt\n");
#elif defined(__aarch64__)
#define NR_write 64
#define NR_execve 221
#define NR_exit 93
static long sys3(long n, long a, long b, long c)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	__asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
	return x0;
}
__asm__(".text\n.global _start\n_start:\n\tmov x0, sp\n\tbl cstart\n");
#else
#error "no trampoline for this architecture"
#endif

static long len(const char *s)
{
	long n = 0;
	while (s[n])
		n++;
	return n;
}

static void say(const char *s)
{
	sys3(NR_write, 2, (long)s, len(s));
}

__attribute__((used, noreturn)) void cstart(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	const char *m = MAGIC;
	long i;

	for (i = 0; argc > 0 && m[i] && argv[0][i] == m[i]; i++)
		;
	if (argc < 3 || m[i] || argv[0][i]) {
		say("jaula-runtime: the exec trampoline runs only as the runtime's last step\n");
		sys3(NR_exit, 126, 0, 0);
	}
	long err = -sys3(NR_execve, (long)argv[1], (long)(argv + 2), (long)envp);
	say("jaula-runtime: exec ");
	say(argv[1]);
	say(err == 2 ? ": no such file or directory\n" : err == 13 ? ": permission denied\n" : ": failed\n");
	sys3(NR_exit, 127, 0, 0);
	for (;;)
		;
}
