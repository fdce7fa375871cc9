/*
 * pacer: an open-loop HTTP/1.1 load generator for fixed-rate runs.
 *
 * Debian ships wrk but neither wrk2 nor oha, so the fixed-rate half of the benchmark uses this small
 * program instead (built by bench/load.py with the system C compiler the first time it is needed).
 *
 * The model is wrk2's: request i is *due* at t0 + i / rate, whatever happened before it. It goes out on
 * the first idle keep-alive connection at or after that moment, and its latency is measured from the
 * moment it was due, not from the moment it left. A server that stalls therefore gets charged for every
 * request that queued up behind the stall, which is what removes coordinated omission from the tail.
 *
 *   pacer -p PORT -r RATE (-d SECONDS | -n COUNT) [-c CONNECTIONS] [-t TIMEOUT_S] -f REQUEST_FILE [-f ...]
 *
 * Each REQUEST_FILE holds one complete raw HTTP/1.1 request (headers and body); requests rotate over the
 * files. Responses must carry Content-Length or be chunked. The result is one JSON object on stdout.
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
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILES 64
#define MAX_CONNS 1024
#define LATE_NS 1000000LL /* a send more than 1 ms after its due time counts as late */

typedef struct {
    int fd;
    long request;   /* index of the request in flight, -1 when idle */
    char *buf;
    size_t len, cap;
} conn_t;

static char *requests[MAX_FILES];
static size_t request_len[MAX_FILES];
static int nfiles;
static int port;
static conn_t conns[MAX_CONNS];
static int nconns = 64;
static int idle[MAX_CONNS];
static int nidle;
static int epfd;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "pacer: %s: %s\n", what, strerror(errno));
    exit(2);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) die(path);
    fclose(f);
    *len = (size_t)size;
    return data;
}

static int open_connection(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void attach(int i) {
    conns[i].fd = open_connection();
    conns[i].request = -1;
    conns[i].len = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
    idle[nidle++] = i;
}

static void reconnect(int i) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, conns[i].fd, NULL);
    close(conns[i].fd);
    attach(i);
}

/* 1: a whole response is in the buffer (status stored), 0: not yet, -1: unparseable. */
static int response_complete(conn_t *c, int *status) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - c->buf) + 4;
    if (c->len < 12 || strncmp(c->buf, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(c->buf + 9);
    char saved = c->buf[head - 1];
    c->buf[head - 1] = '\0';
    char *cl = strcasestr(c->buf, "\r\ncontent-length:");
    char *te = strcasestr(c->buf, "\r\ntransfer-encoding: chunked");
    c->buf[head - 1] = saved;
    if (cl) {
        size_t body = (size_t)strtoul(cl + 17, NULL, 10);
        return c->len >= head + body ? 1 : 0;
    }
    if (te) return c->len >= head + 5 && memcmp(c->buf + c->len - 5, "0\r\n\r\n", 5) == 0 ? 1 : 0;
    return -1;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const uint32_t *sorted, long n, double p) {
    if (n == 0) return 0;
    long index = (long)(p / 100.0 * (double)(n - 1) + 0.5);
    return sorted[index];
}

int main(int argc, char **argv) {
    double rate = 0, duration = 0, timeout_s = 10;
    long count = 0;
    int opt;
    while ((opt = getopt(argc, argv, "p:r:d:n:c:t:f:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'n': count = atol(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 't': timeout_s = atof(optarg); break;
        case 'f':
            if (nfiles == MAX_FILES) { fprintf(stderr, "pacer: too many -f\n"); return 2; }
            requests[nfiles] = read_file(optarg, &request_len[nfiles]);
            nfiles++;
            break;
        default: fprintf(stderr, "pacer: unknown option\n"); return 2;
        }
    }
    if (!port || rate <= 0 || (!count && duration <= 0) || !nfiles || nconns < 1 || nconns > MAX_CONNS) {
        fprintf(stderr, "usage: pacer -p PORT -r RATE (-d SECONDS | -n COUNT) [-c CONNS] [-t TIMEOUT] -f FILE...\n");
        return 2;
    }
    long total = count ? count : (long)(rate * duration);
    uint32_t *latency_us = calloc((size_t)total, sizeof *latency_us);
    if (!latency_us) die("calloc");

    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (tfd < 0) die("timerfd_create");
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);
    for (int i = 0; i < nconns; i++) {
        conns[i].cap = 65536;
        conns[i].buf = malloc(conns[i].cap);
        attach(i);
    }

    const double interval_ns = 1e9 / rate;
    const int64_t t0 = now_ns() + 1000000LL;
    const int64_t give_up = t0 + (int64_t)((double)total * interval_ns) + (int64_t)(timeout_s * 1e9);
    long next = 0, completed = 0, errors = 0, non2xx = 0, late = 0, recorded = 0;
    long status_2xx = 0, status_4xx = 0, status_5xx = 0;
    int64_t last_done = t0;
    struct epoll_event events[MAX_CONNS + 1];

    while (completed + errors < total) {
        int64_t now = now_ns();
        if (now > give_up) break;
        while (next < total && nidle > 0) {
            int64_t due = t0 + (int64_t)((double)next * interval_ns);
            if (due > now) break;
            int i = idle[--nidle];
            size_t which = (size_t)(next % nfiles);
            ssize_t sent = write(conns[i].fd, requests[which], request_len[which]);
            if (sent != (ssize_t)request_len[which]) {
                errors++;
                next++;
                reconnect(i);
                continue;
            }
            if (now - due > LATE_NS) late++;
            conns[i].request = next++;
            conns[i].len = 0;
        }
        struct itimerspec its = {0};
        if (next < total && nidle > 0) {
            int64_t due = t0 + (int64_t)((double)next * interval_ns);
            its.it_value.tv_sec = due / 1000000000LL;
            its.it_value.tv_nsec = due % 1000000000LL;
        }
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        int n = epoll_wait(epfd, events, MAX_CONNS + 1, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            uint32_t id = events[e].data.u32;
            if (id == UINT32_MAX) {
                uint64_t expirations;
                ssize_t ignored = read(tfd, &expirations, sizeof expirations);
                (void)ignored;
                continue;
            }
            conn_t *c = &conns[id];
            for (;;) {
                if (c->len == c->cap) {
                    c->cap *= 2;
                    c->buf = realloc(c->buf, c->cap);
                    if (!c->buf) die("realloc");
                }
                ssize_t got = read(c->fd, c->buf + c->len, c->cap - c->len);
                if (got > 0) {
                    c->len += (size_t)got;
                    continue;
                }
                if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                /* closed by the server or failed: the request in flight is an error */
                if (c->request >= 0) errors++;
                reconnect((int)id);
                c = NULL;
                break;
            }
            if (!c || c->request < 0) continue;
            int status = 0;
            int done = response_complete(c, &status);
            if (done == 0) continue;
            int64_t finished = now_ns();
            if (done < 0) {
                errors++;
                reconnect((int)id);
                continue;
            }
            int64_t due = t0 + (int64_t)((double)c->request * interval_ns);
            int64_t us = (finished - due) / 1000;
            latency_us[recorded++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
            completed++;
            if (status >= 200 && status < 300) status_2xx++;
            else {
                non2xx++;
                if (status >= 500) status_5xx++;
                else if (status >= 400) status_4xx++;
            }
            last_done = finished;
            c->request = -1;
            c->len = 0;
            idle[nidle++] = (int)id;
        }
    }
    long unanswered = total - completed - errors;
    qsort(latency_us, (size_t)recorded, sizeof *latency_us, cmp_u32);
    double sum = 0;
    for (long i = 0; i < recorded; i++) sum += latency_us[i];
    double elapsed = (double)(last_done - t0) / 1e9;
    printf("{\"target_rate\": %.3f, \"requests\": %ld, \"completed\": %ld, \"errors\": %ld, \"unanswered\": %ld, "
           "\"non_2xx\": %ld, \"status_4xx\": %ld, \"status_5xx\": %ld, \"late_sends\": %ld, "
           "\"connections\": %d, \"elapsed_s\": %.3f, \"achieved_rate\": %.3f, "
           "\"latency_us\": {\"mean\": %.1f, \"p50\": %.0f, \"p90\": %.0f, \"p99\": %.0f, \"p999\": %.0f, \"max\": %.0f}}\n",
           rate, total, completed, errors, unanswered, non2xx, status_4xx, status_5xx, late, nconns, elapsed,
           elapsed > 0 ? (double)completed / elapsed : 0.0, recorded ? sum / (double)recorded : 0.0,
           percentile(latency_us, recorded, 50), percentile(latency_us, recorded, 90),
           percentile(latency_us, recorded, 99), percentile(latency_us, recorded, 99.9),
           recorded ? (double)latency_us[recorded - 1] : 0.0);
    (void)status_2xx;
    return 0;
}
