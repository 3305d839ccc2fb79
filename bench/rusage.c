/* rusage OUTFILE PROG [ARGS...]: run PROG, then write "<wall ns> <ru_maxrss KiB> <wait status>"
 * to OUTFILE; exit with PROG's exit code (128+signal if killed).
 *
 * Why not from Python: a child forked (or vforked) from the benchmark inherits the parent's
 * resident pages into its high-water mark, and ru_maxrss keeps that across execve, so every
 * runtime would show at least the interpreter's ~16 MiB. Forked from this tiny static program,
 * the floor is a few hundred KiB. Built by scripts/build-test-assets into build/rusage.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec t0, t1;
    struct rusage ru;
    int status;
    pid_t pid;
    FILE *out;

    if (argc < 3) {
        fputs("usage: rusage OUTFILE PROG [ARGS...]\n", stderr);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid = fork();
    if (pid < 0) { perror("rusage: fork"); return 127; }
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror("rusage: execvp");
        _exit(127);
    }
    if (wait4(pid, &status, 0, &ru) < 0) { perror("rusage: wait4"); return 127; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    out = fopen(argv[1], "w");
    if (!out) { perror("rusage: fopen"); return 127; }
    fprintf(out, "%lld %ld %d\n",
            (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec),
            ru.ru_maxrss, status);
    fclose(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
