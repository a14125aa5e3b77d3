/*
 * The seccomp listener's first reader: answers CONTINUE, in C, for the
 * notified calls that no emulation applies to, and hands every other
 * notification to the Python supervisor through a pipe.
 *
 * An apt run notifies about 35,000 stats and execs.  Almost every one names
 * a file with no recorded owner (or an exec of a file with no set-id bit):
 * the emulation's answer is then CONTINUE, and the Python listener took
 * about 20 us of the runner's CPU to find that out, while the caller waited.
 * Here the same test costs the same few syscalls and no interpreter.
 *
 * The test mirrors the Python handlers (emulate/stat.py lookup, lookup_fd;
 * supervisor.py _exec) exactly where they answer CONTINUE; whenever it
 * cannot tell, it forwards, and Python decides as before.  No Python API is
 * used: the library is loaded with ctypes (prefilter.py), and the thread it
 * starts never touches the interpreter.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#define OWNER_XATTR "user.rootlesscontainers"
#define COUNTED 512              /* x86_64 syscall numbers counted per call */
#define AT_FLAGS (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT)

enum verdict { FORWARD, CONTINUE };

struct prefilter {
    int listener;
    int forward;                 /* write end; closed when the thread ends */
    int stop;                    /* eventfd: the supervisor ends the thread */
    int error;                   /* errno that ended the thread, 0 for a hangup or stop */
    pthread_t thread;
    uint64_t continued[COUNTED];
};

/* The NUL-terminated string at addr in pid's memory, page by page. */
static int read_path(pid_t pid, uint64_t addr, char *out, size_t size)
{
    size_t got = 0;

    if (addr == 0)
        return -1;
    while (got < size) {
        size_t chunk = 4096 - (addr + got) % 4096;
        if (chunk > size - got)
            chunk = size - got;
        struct iovec local = { out + got, chunk };
        struct iovec remote = { (void *)(uintptr_t)(addr + got), chunk };
        ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
        if (n <= 0)
            return -1;
        if (memchr(out + got, 0, (size_t)n))
            return 0;
        got += (size_t)n;
    }
    return -1;                   /* longer than PATH_MAX: the kernel fails it too */
}

static int fd_link(char *out, size_t size, pid_t pid, int fd)
{
    if (fd == AT_FDCWD)
        return snprintf(out, size, "/proc/%d/cwd", pid) < (int)size ? 0 : -1;
    if (fd < 0)
        return -1;
    return snprintf(out, size, "/proc/%d/fd/%d", pid, fd) < (int)size ? 0 : -1;
}

/* An O_PATH fd for what pid's path names, resolved in pid's root (TraceeFiles.open). */
static int open_in_root(pid_t pid, int dirfd, const char *path, int follow)
{
    char joined[2 * PATH_MAX];
    char link[64];
    const char *rel = path;

    if (path[0] != '/') {
        if (fd_link(link, sizeof link, pid, dirfd) < 0)
            return -1;
        ssize_t n = readlink(link, joined, PATH_MAX);
        if (n <= 0 || n >= PATH_MAX || joined[0] != '/')
            return -1;
        while (n > 0 && joined[n - 1] == '/')
            n--;
        joined[n++] = '/';
        size_t len = strlen(path);
        if ((size_t)n + len >= sizeof joined)
            return -1;
        memcpy(joined + n, path, len + 1);
        rel = joined;
    }
    while (*rel == '/')
        rel++;
    if (*rel == '\0')
        rel = ".";
    snprintf(link, sizeof link, "/proc/%d/root", pid);
    int root = open(link, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return -1;
    struct open_how how = {
        .flags = O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW),
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof how);
    close(root);
    return fd;
}

static int has_owner_xattr(const char *path)
{
    return getxattr(path, OWNER_XATTR, NULL, 0) >= 0;
}

/* stat/lstat/newfstatat of a path: CONTINUE unless a recorded owner may apply. */
static enum verdict stat_path(pid_t pid, int dirfd, uint64_t path_addr, int flags)
{
    char path[PATH_MAX];
    char self[64];
    struct stat info;
    enum verdict verdict = CONTINUE;

    if (read_path(pid, path_addr, path, sizeof path) < 0)
        return CONTINUE;         /* the kernel fails it the same way */
    if (path[0] == '\0') {
        if (!(flags & AT_EMPTY_PATH) || fd_link(self, sizeof self, pid, dirfd) < 0)
            return CONTINUE;
        return has_owner_xattr(self) ? FORWARD : CONTINUE;
    }
    int fd = open_in_root(pid, dirfd, path, !(flags & AT_SYMLINK_NOFOLLOW));
    if (fd < 0)
        return CONTINUE;
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    if (has_owner_xattr(self))
        verdict = FORWARD;
    else if (fstat(fd, &info) == 0 && !S_ISREG(info.st_mode) && !S_ISDIR(info.st_mode)
             && !S_ISCHR(info.st_mode) && !S_ISBLK(info.st_mode))
        verdict = FORWARD;       /* a symlink or FIFO: its owner may be in the parent's side record */
    close(fd);
    return verdict;
}

static enum verdict stat_fd(pid_t pid, int fd)
{
    char link[64];

    if (fd < 0 || fd_link(link, sizeof link, pid, fd) < 0)
        return CONTINUE;
    return has_owner_xattr(link) ? FORWARD : CONTINUE;
}

/* execve: only a set-id regular file can change the caller's ids. */
static enum verdict exec_path(pid_t pid, uint64_t path_addr)
{
    char path[PATH_MAX];
    struct stat info;
    enum verdict verdict = CONTINUE;

    if (read_path(pid, path_addr, path, sizeof path) < 0 || path[0] == '\0')
        return CONTINUE;
    int fd = open_in_root(pid, AT_FDCWD, path, 1);
    if (fd < 0)
        return CONTINUE;
    if (fstat(fd, &info) == 0 && S_ISREG(info.st_mode) && info.st_mode & (S_ISUID | S_ISGID))
        verdict = FORWARD;
    close(fd);
    return verdict;
}

static enum verdict decide(const struct seccomp_notif *req)
{
    const __u64 *a = req->data.args;
    pid_t pid = (pid_t)req->pid;

    if (req->data.arch != AUDIT_ARCH_X86_64)
        return FORWARD;
    switch (req->data.nr) {
    case SYS_stat:
        return stat_path(pid, AT_FDCWD, a[0], 0);
    case SYS_lstat:
        return stat_path(pid, AT_FDCWD, a[0], AT_SYMLINK_NOFOLLOW);
    case SYS_fstat:
        return stat_fd(pid, (int)a[0]);
    case SYS_newfstatat:
        if ((int)a[3] & ~AT_FLAGS)
            return CONTINUE;     /* the kernel rejects the flags */
        return stat_path(pid, (int)a[0], a[1], (int)a[3]);
    case SYS_execve:
        return exec_path(pid, a[0]);
    default:
        return FORWARD;
    }
}

static int write_all(int fd, const void *buf, size_t size)
{
    while (size) {
        ssize_t n = write(fd, buf, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf = (const char *)buf + n;
        size -= (size_t)n;
    }
    return 0;
}

static void *serve(void *arg)
{
    struct prefilter *p = arg;
    struct pollfd fds[2] = { { p->listener, POLLIN, 0 }, { p->stop, POLLIN, 0 } };
    struct seccomp_notif req;
    sigset_t pipe_signal;

    /* A closed read end (the supervisor gave up) is an EPIPE here, never a SIGPIPE for the process. */
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, NULL);
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            p->error = errno;
            break;
        }
        if (fds[1].revents)
            break;
        if (!(fds[0].revents & POLLIN))
            break;               /* hangup: no task uses the filter any more */
        memset(&req, 0, sizeof req);
        if (ioctl(p->listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
            if (errno == ENOENT || errno == EINTR)
                continue;        /* its caller died or was interrupted meanwhile */
            p->error = errno;
            break;
        }
        if (decide(&req) == FORWARD) {
            if (write_all(p->forward, &req, sizeof req) < 0) {
                p->error = errno;
                break;
            }
            continue;
        }
        struct seccomp_notif_resp resp = { .id = req.id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE };
        if (ioctl(p->listener, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT) {
            p->error = errno;
            break;
        }
        if (req.data.nr < COUNTED)
            p->continued[req.data.nr]++;
    }
    close(p->forward);           /* the supervisor reads end-of-file */
    return NULL;
}

/* Start serving listener; forwarded notifications are written to forward (owned from here on). */
struct prefilter *rr_prefilter_start(int listener, int forward)
{
    struct prefilter *p = calloc(1, sizeof *p);

    if (p == NULL)
        return NULL;
    p->listener = listener;
    p->forward = forward;
    p->stop = eventfd(0, EFD_CLOEXEC);
    if (p->stop < 0) {
        free(p);
        return NULL;
    }
    int err = pthread_create(&p->thread, NULL, serve, p);
    if (err) {
        close(p->stop);
        free(p);
        errno = err;
        return NULL;
    }
    return p;
}

/* End the thread, copy the per-syscall CONTINUE counts out, free; the errno that ended it (0: none). */
int rr_prefilter_stop(struct prefilter *p, uint64_t *continued, size_t counted)
{
    uint64_t one = 1;
    int error;

    if (write(p->stop, &one, sizeof one) < 0 && errno != EAGAIN)
        return errno;            /* cannot happen for a fresh eventfd; the thread is left running */
    pthread_join(p->thread, NULL);
    memcpy(continued, p->continued, sizeof(uint64_t) * (counted < COUNTED ? counted : COUNTED));
    error = p->error;
    close(p->stop);
    free(p);
    return error;
}

size_t rr_prefilter_counted(void)
{
    return COUNTED;
}
