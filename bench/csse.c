/* A small SSE load generator in C for bench/cfanout.py: it costs the machine far less per
 * delivery than the Python load generator, so a fan-out's latency is the server's.
 *
 *   csse HOST PORT PATH N INFLIGHT MESSAGES DEADLINE_S
 *
 * Opens N connections to HOST:PORT, GET PATH on each (at most INFLIGHT connects or response
 * heads outstanding), then reads every stream. A line "data: <tag> <ns>" is an event: a tag
 * starting with "w" is a warm-up (once every connected client saw one, it prints "warmed"), a
 * tag starting with "m" is measured: latency = CLOCK_MONOTONIC now - <ns> (the publisher's
 * time.monotonic_ns(), the same clock). It stops once every connected client got MESSAGES
 * measured events, or at DEADLINE_S seconds after start, and prints one line:
 *
 *   done <received> <expected> <p50 us> <p99 us> <max us> <reads> <cpu s> <open>
 *
 * Before that: "connected <ok> <failed> <ms>" once every connect was answered, and "warmed".
 * Lines on stdout, flushed; errors on stderr. Bounded: N <= 60000, MESSAGES <= 1000 (latencies
 * are kept for the percentiles: 8 bytes each), one 64 KiB read buffer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CONNECTING, HEAD, STREAM, CLOSED };
#define LINE_MAX_LEN 256

typedef struct {
    int fd, state, warm, got;
    char line[LINE_MAX_LEN];
    int len; /* bytes in line; for HEAD: how many of "\r\n\r\n" matched */
} client;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static client *cl;
static int64_t *lat;
static long nlat, lat_cap, reads;
static int warmed, nwarm, ok, failed, pending, started, n, inflight, messages, epfd;
static struct sockaddr_in addr;
static char req[512];
static int reqlen;

static void start_one(void) {
    client *c = &cl[started];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    c->fd = fd;
    c->state = CONNECTING;
    started++;
    pending++;
    if (fd < 0) {
        c->state = CLOSED;
        failed++;
        pending--;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(fd);
        c->state = CLOSED;
        failed++;
        pending--;
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)(c - cl)};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void drop(client *c, int counted_ok) {
    if (c->state == CLOSED) return;
    if (!counted_ok) {
        failed++;
        pending--;
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = CLOSED;
}

static void on_line(client *c, const char *s, int len) {
    if (len < 8 || memcmp(s, "data: ", 6) != 0) return;
    const char *tag = s + 6;
    const char *sp = memchr(tag, ' ', (size_t)(len - 6));
    if (!sp) return;
    int64_t ns = strtoll(sp + 1, NULL, 10);
    if (tag[0] == 'w') {
        if (!c->warm) {
            c->warm = 1;
            nwarm++;
        }
    } else if (tag[0] == 'm') {
        if (nlat < lat_cap) lat[nlat++] = now_ns() - ns;
        c->got++;
    }
}

static void on_data(client *c, const char *buf, ssize_t r) {
    ssize_t i = 0;
    if (c->state == HEAD) {
        static const char end[] = "\r\n\r\n";
        if (c->len == 0 && r >= 12 && memcmp(buf, "HTTP/1.1 200", 12) != 0 &&
            memcmp(buf, "HTTP/1.0 200", 12) != 0) {
            drop(c, 0);
            return;
        }
        for (; i < r && c->len < 4; i++) c->len = buf[i] == end[c->len] ? c->len + 1 : (buf[i] == '\r');
        if (c->len < 4) return;
        c->state = STREAM;
        c->len = 0;
        ok++;
        pending--;
    }
    for (; i < r; i++) {
        char ch = buf[i];
        if (ch == '\n') {
            on_line(c, c->line, c->len);
            c->len = 0;
        } else if (c->len < LINE_MAX_LEN - 1) {
            c->line[c->len++] = ch;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: csse HOST PORT PATH N INFLIGHT MESSAGES DEADLINE_S\n");
        return 2;
    }
    n = atoi(argv[4]);
    inflight = atoi(argv[5]);
    messages = atoi(argv[6]);
    double deadline_s = atof(argv[7]);
    if (n < 1 || n > 60000 || inflight < 1 || messages < 0 || messages > 1000 || deadline_s <= 0) {
        fprintf(stderr, "csse: bad arguments\n");
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "csse: bad host\n");
        return 2;
    }
    reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n",
                      argv[3], argv[1]);
    cl = calloc((size_t)n, sizeof *cl);
    lat_cap = (long)n * (messages + 1);
    lat = malloc(sizeof *lat * (size_t)lat_cap);
    epfd = epoll_create1(0);
    if (!cl || !lat || epfd < 0) {
        fprintf(stderr, "csse: out of memory\n");
        return 1;
    }
    int64_t t0 = now_ns(), deadline = t0 + (int64_t)(deadline_s * 1e9);
    int announced = 0;
    static char buf[65536];
    struct epoll_event evs[512];
    for (;;) {
        while (started < n && pending < inflight) start_one();
        if (!announced && started == n && pending == 0) {
            printf("connected %d %d %.0f\n", ok, failed, (now_ns() - t0) / 1e6);
            fflush(stdout);
            announced = 1;
        }
        if (announced && !warmed && ok > 0 && nwarm >= ok) {
            printf("warmed\n");
            fflush(stdout);
            warmed = 1;
        }
        if (warmed && nlat >= (long)ok * messages) break;
        if (now_ns() > deadline) break;
        int k = epoll_wait(epfd, evs, 512, 100);
        for (int j = 0; j < k; j++) {
            client *c = &cl[evs[j].data.u32];
            if (c->state == CLOSED) continue;
            if (c->state == CONNECTING) {
                int err = 0;
                socklen_t l = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err || write(c->fd, req, (size_t)reqlen) != reqlen) {
                    drop(c, 0);
                    continue;
                }
                c->state = HEAD;
                c->len = 0;
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[j].data.u32};
                epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            for (;;) {
                ssize_t r = read(c->fd, buf, sizeof buf);
                if (r > 0) {
                    reads++;
                    on_data(c, buf, r);
                    if (c->state == CLOSED || r < (ssize_t)sizeof buf) break;
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
                drop(c, c->state == STREAM); /* EOF or error */
                break;
            }
        }
    }
    int open = 0;
    for (int i = 0; i < started; i++) open += cl[i].state == STREAM;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    qsort(lat, (size_t)nlat, sizeof *lat, cmp64);
    int64_t p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(long)(nlat * 0.99)] : 0;
    int64_t mx = nlat ? lat[nlat - 1] : 0;
    printf("done %ld %ld %lld %lld %lld %ld %.3f %d\n", nlat, (long)ok * messages, (long long)(p50 / 1000),
           (long long)(p99 / 1000), (long long)(mx / 1000), reads, cpu, open);
    fflush(stdout);
    return 0;
}
