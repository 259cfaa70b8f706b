/* LD_PRELOAD shim for the kill -9 tests: after killwal_arm(n), the n-th write to a SQLite
 * write-ahead log ("...-wal") raises SIGKILL before it happens, so the process dies in the
 * middle of a commit (some of the transaction's frames in the log, not its commit frame). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int left = -1; /* writes to a log still allowed; -1: not armed */

void killwal_arm(int writes) { left = writes; }

static int is_wal(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 4) return 0;
    path[n] = 0;
    return strcmp(path + n - 4, "-wal") == 0;
}

static void maybe_die(int fd) {
    if (left < 0 || !is_wal(fd)) return;
    if (left == 0) raise(SIGKILL);
    left--;
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    maybe_die(fd);
    return real(fd, buf, count, offset);
}

ssize_t write(int fd, const void *buf, size_t count) {
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    maybe_die(fd);
    return real(fd, buf, count);
}
