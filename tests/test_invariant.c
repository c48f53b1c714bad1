/* test_invariant.c: the always-on invariant macros abort, and say where and with which values. */
#define NDEBUG 1 /* they must stay on where assert() is compiled out */
#include "engine/invariant.h"
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "tests/check.h"

/* Runs fn in a child with stderr in a pipe; returns its termination signal (0 if it exited) and
 * what it wrote in msg. */
static int run_child(void (*fn)(void), char *msg, size_t cap) {
    int fd[2];
    if (pipe(fd)) return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0);
    }
    close(fd[1]);
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(fd[0], msg + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    msg[n] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}

static void holds(void) {
    int a = 3;
    size_t b = 3;
    INVARIANT(a == 3);
    INVARIANT_CMP(a, ==, b);
    INVARIANT_CMP(a, <=, 4);
}
static void fails_plain(void) {
    int x = 0;
    INVARIANT(x > 0);
}
static void fails_cmp(void) {
    size_t len = 5000, cap = 4096;
    INVARIANT_CMP(len, <=, cap);
}

int main(void) {
    char msg[512];
    CHECK_EQ_INT(run_child(holds, msg, sizeof msg), 0);
    CHECK_STR(msg, "");
    CHECK_EQ_INT(run_child(fails_plain, msg, sizeof msg), SIGABRT);
    CHECK(strstr(msg, "test_invariant.c:") && strstr(msg, "invariant failed: x > 0"));
    CHECK_EQ_INT(run_child(fails_cmp, msg, sizeof msg), SIGABRT);
    CHECK(strstr(msg, "invariant failed: len <= cap (5000 vs 4096)") != NULL);
    if (check_failures) fprintf(stderr, "child said: %s\n", msg);
    return check_done("test_invariant");
}
