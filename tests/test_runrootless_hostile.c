/* Hostile tracee for tests/test_runrootless_hostile.py (static, no libc beyond the basics).
 *
 *   hostile call ABI NR [ARG...] [-- ABI NR [ARG...]]...
 *       raw syscalls through the x86_64 (syscall), i386 (int 0x80) or x32
 *       (syscall with __X32_SYSCALL_BIT) entry; prints each result.  ARG is a
 *       number, s:TEXT (a string), buf:N (N zero bytes) or fd:PATH (opened
 *       when the call is made).  Pseudo ABIs: "stat PATH" and "fstat FD"
 *       print uid:gid as libc's stat sees them.
 *   hostile forks | zombies | threads    fork/clone until it fails; print how many worked
 *   hostile manythreads N                N threads alive at once, each asks getuid
 *   hostile killstorm N                  N processes killed while their threads make trapped calls
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char pool[1 << 16] __attribute__((aligned(16)));   /* below 4 GiB: reachable by 32-bit entries */
static size_t used;

static long arg(const char *a) {
    if (!strncmp(a, "s:", 2)) {
        size_t n = strlen(a + 2) + 1;
        char *p = pool + used;
        memcpy(p, a + 2, n);
        used += (n + 15) & ~15UL;
        return (long)p;
    }
    if (!strncmp(a, "buf:", 4)) {
        char *p = pool + used;
        used += (strtoul(a + 4, NULL, 0) + 15) & ~15UL;
        return (long)p;
    }
    if (!strncmp(a, "fd:", 3)) {
        int fd = open(a + 3, O_RDONLY);
        if (fd < 0) { perror(a + 3); exit(2); }
        return fd;
    }
    return strtol(a, NULL, 0);
}

static long raw(const char *abi, long nr, const long *a) {
    long r;
    if (!strcmp(abi, "i386")) {
        __asm__ volatile ("int $0x80" : "=a"(r)
                          : "a"(nr), "b"(a[0]), "c"(a[1]), "d"(a[2]), "S"(a[3]), "D"(a[4])
                          : "r8", "r9", "r10", "r11", "memory");
        return r;
    }
    if (!strcmp(abi, "x32"))
        nr |= 0x40000000;
    else if (strcmp(abi, "x86_64")) { fprintf(stderr, "bad abi %s\n", abi); exit(2); }
    register long r10 __asm__("r10") = a[3];
    register long r8 __asm__("r8") = a[4];
    register long r9 __asm__("r9") = a[5];
    __asm__ volatile ("syscall" : "=a"(r)
                      : "a"(nr), "D"(a[0]), "S"(a[1]), "d"(a[2]), "r"(r10), "r"(r8), "r"(r9)
                      : "rcx", "r11", "memory");
    return r;
}

static int calls(int argc, char **argv) {
    int i = 0;
    while (i < argc) {
        const char *abi = argv[i++];
        struct stat st;
        if (!strcmp(abi, "stat") || !strcmp(abi, "fstat")) {
            int rc = abi[0] == 's' ? stat(argv[i], &st) : fstat(atoi(argv[i]), &st);
            i++;
            if (rc) printf("-%d\n", errno); else printf("%u:%u\n", st.st_uid, st.st_gid);
        } else {
            long nr = strtol(argv[i++], NULL, 0), a[6] = {0};
            for (int k = 0; i < argc && strcmp(argv[i], "--"); i++, k++)
                if (k < 6) a[k] = arg(argv[i]);
            printf("%ld\n", raw(abi, nr, a));
        }
        fflush(stdout);
        if (i < argc) i++;   /* "--" */
    }
    return 0;
}

static int hold[2];

static void *held(void *unused) {
    char c;
    (void)unused;
    read(hold[0], &c, 1);
    return NULL;
}

/* Forks (children wait for the release), zombies (children exit at once, never
 * waited for until the end) or threads, until the call fails. */
static int bomb(const char *kind) {
    static pthread_t tids[1 << 16];
    pthread_attr_t attr;
    int n = 0, err = 0;
    pipe(hold);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 65536);
    while (n < (1 << 16)) {
        if (!strcmp(kind, "threads")) {
            err = pthread_create(&tids[n], &attr, held, NULL);
            if (err) break;
        } else {
            pid_t pid = fork();
            if (pid < 0) { err = errno; break; }
            if (pid == 0) {
                if (kind[0] == 'f') {
                    close(hold[1]);
                    held(NULL);
                }
                _exit(0);
            }
        }
        n++;
    }
    printf("%s %d errno %d\n", kind, n, err);
    fflush(stdout);
    close(hold[1]);
    int reaped = 0;
    if (!strcmp(kind, "threads")) {
        for (int i = 0; i < n; i++) reaped += pthread_join(tids[i], NULL) == 0;
    } else {
        while (wait(NULL) > 0) reaped++;
        pid_t pid = fork();       /* the bound is live tasks: with all reaped, forks work again */
        if (pid == 0) _exit(0);
        printf("again %s\n", pid > 0 && waitpid(pid, NULL, 0) == pid ? "ok" : strerror(errno));
    }
    printf("reaped %d\n", reaped);
    return 0;
}

static pthread_barrier_t barrier;

static void *ask(void *out) {
    *(long *)out = syscall(SYS_getuid);
    pthread_barrier_wait(&barrier);
    return NULL;
}

static int manythreads(int n) {
    pthread_t *tids = calloc(n, sizeof *tids);
    long *uids = calloc(n, sizeof *uids);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 65536);
    pthread_barrier_init(&barrier, NULL, n + 1);
    int made = 0, joined = 0, root = 0;
    for (; made < n; made++)
        if (pthread_create(&tids[made], &attr, ask, &uids[made])) break;
    if (made < n) { printf("created only %d\n", made); return 1; }
    pthread_barrier_wait(&barrier);     /* all n alive at this point */
    for (int i = 0; i < n; i++) {
        joined += pthread_join(tids[i], NULL) == 0;
        root += uids[i] == 0;
    }
    printf("threads %d joined %d uid0 %d\n", made, joined, root);
    return 0;
}

static void *spin(void *unused) {
    (void)unused;
    for (;;) {
        chown("/tmp", 0, 0);
        getuid();
    }
    return NULL;
}

static int killstorm(int n) {
    int killed = 0;
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            pthread_t t;
            for (int k = 0; k < 3; k++) pthread_create(&t, NULL, spin, NULL);
            for (int k = 0; k < 5 + i % 10; k++) chown("/tmp", 0, 0);
            kill(getpid(), SIGKILL);
        }
        int status;
        if (waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) killed++;
    }
    printf("killed %d\n", killed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "call")) return calls(argc - 2, argv + 2);
    if (argc > 1 && (!strcmp(argv[1], "forks") || !strcmp(argv[1], "zombies") || !strcmp(argv[1], "threads")))
        return bomb(argv[1]);
    if (argc > 2 && !strcmp(argv[1], "manythreads")) return manythreads(atoi(argv[2]));
    if (argc > 2 && !strcmp(argv[1], "killstorm")) return killstorm(atoi(argv[2]));
    fprintf(stderr, "usage: hostile call|forks|zombies|threads|manythreads N|killstorm N\n");
    return 2;
}
