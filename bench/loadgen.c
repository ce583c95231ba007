/*
 * loadgen: a small load generator for Unix-socket credential servers.
 *
 * It drives N concurrent clients (one thread each, all released together) against a
 * Unix socket and prints one JSON object with requests/s and latency percentiles.
 * A thread per client keeps the code obvious; at the concurrencies measured here
 * (1..64 for throughput, 1,000 one-shot callers for the refresh storm) the threads
 * spend their time blocked in read(), so they cost the server nothing.
 *
 * Modes:
 *   keepalive  HTTP/1.1, one connection per client, request after request
 *   conn       HTTP/1.1, a new connection per request ("Connection: close")
 *   gitcache   git credential-cache's wire format: connect, write
 *              "action=get\ntimeout=900\n<credential>\n", shut down the write side,
 *              read the answer until EOF (what `git credential-cache get` does)
 *
 * It also has a trivial server (--serve) that answers every request with a canned
 * response from one epoll thread; running the generator against it shows what the
 * generator itself can drive on this machine.
 *
 * Build: gcc -O2 -pthread -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

enum mode { MODE_KEEPALIVE, MODE_CONN, MODE_GITCACHE };

static const char *sock_path;
static enum mode mode = MODE_KEEPALIVE;
static const char *req_path = "/v1/token?profile=default";
static const char *git_host = "api.coactive.ai";
static int nclients = 1;
static double duration_s = 0;      /* 0: use a request count */
static long total_requests = 0;    /* shared budget when > 0 */
static long per_client = 0;        /* each client makes exactly this many when > 0 */
static double warmup_s = 0;
static int timeout_s = 30;
static int preconnect = 0;         /* keepalive: connect before the clients are released */
static const char *tcp_target;     /* --tcp 127.0.0.1:PORT: TCP instead of the Unix socket */
static const char *extra_header;   /* --header "Name: value", added to each request */
static char host_header[128] = "localhost";

static char request_buf[1024];
static size_t request_len;

static atomic_int stop_flag;
static atomic_int recording;
static atomic_long budget;
static pthread_barrier_t start_barrier;

struct client {
    pthread_t tid;
    uint64_t *lat;      /* latency samples, ns */
    size_t n, cap;
    long errors;
    long reconnects;
    int fd;             /* keepalive: the connection made before the start, or -1 */
    char first_error[160];
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void note_error(struct client *c, const char *what) {
    c->errors++;
    if (!c->first_error[0])
        snprintf(c->first_error, sizeof c->first_error, "%s: %s", what,
                 errno ? strerror(errno) : "protocol");
}

static void record(struct client *c, uint64_t ns) {
    if (!atomic_load_explicit(&recording, memory_order_relaxed))
        return;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4096;
        c->lat = realloc(c->lat, c->cap * sizeof *c->lat);
        if (!c->lat) {
            perror("realloc");
            exit(1);
        }
    }
    c->lat[c->n++] = ns;
}

static int connect_tcp(void) {
    char host[64];
    const char *colon = strrchr(tcp_target, ':');
    size_t n = colon ? (size_t)(colon - tcp_target) : 0;
    if (!colon || n >= sizeof host) {
        errno = EINVAL;
        return -1;
    }
    memcpy(host, tcp_target, n);
    host[n] = 0;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        errno = EINVAL;
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = timeout_s, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int connect_unix(void) {
    if (tcp_target)
        return connect_tcp();
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = timeout_s, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, sock_path, sizeof addr.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t len) {
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Read one HTTP response (headers + Content-Length body). Returns the status code,
 * 0 if the peer closed before a byte arrived, -1 on error. *close_after is set when
 * the server said "Connection: close". */
static int read_http_response(int fd, char *buf, size_t cap, int *close_after) {
    size_t have = 0;
    char *hdr_end = NULL;
    *close_after = 0;
    while (!hdr_end) {
        if (have == cap - 1) {
            errno = 0;
            return -1;
        }
        ssize_t r = read(fd, buf + have, cap - 1 - have);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = 0;
            return have ? -1 : 0;
        }
        have += (size_t)r;
        buf[have] = 0;
        hdr_end = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        errno = 0;
        return -1;
    }
    long clen = -1;
    for (char *line = strstr(buf, "\r\n"); line && line < hdr_end; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (strncasecmp(h, "Content-Length:", 15) == 0)
            clen = strtol(h + 15, NULL, 10);
        else if (strncasecmp(h, "Connection:", 11) == 0) {
            char *v = h + 11;
            while (*v == ' ')
                v++;
            if (strncasecmp(v, "close", 5) == 0)
                *close_after = 1;
        }
    }
    if (clen < 0) {
        errno = 0;
        return -1; /* every answer of the servers measured has a Content-Length */
    }
    size_t body_have = have - (size_t)(hdr_end + 4 - buf);
    while ((long)body_have < clen) {
        char tmp[4096];
        size_t want = (size_t)clen - body_have;
        ssize_t r = read(fd, tmp, want < sizeof tmp ? want : sizeof tmp);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            errno = r < 0 ? errno : 0;
            return -1;
        }
        body_have += (size_t)r;
    }
    return status;
}

static int claim(void) {
    if (atomic_load_explicit(&stop_flag, memory_order_relaxed))
        return 0;
    if (total_requests > 0)
        return atomic_fetch_sub(&budget, 1) > 0;
    return 1;
}

static void *run_keepalive(struct client *c) {
    char buf[16384];
    int fd = c->fd;
    long done = 0;
    while (per_client > 0 ? done < per_client : claim()) {
        done++;
        uint64_t t0 = now_ns();
        if (fd < 0) {
            fd = connect_unix();
            if (fd < 0) {
                note_error(c, "connect");
                usleep(1000);
                continue;
            }
            c->reconnects++;
        }
        int close_after;
        int status = -1;
        if (write_all(fd, request_buf, request_len) == 0)
            status = read_http_response(fd, buf, sizeof buf, &close_after);
        else
            note_error(c, "write");
        if (status != 200) {
            if (status >= 0)
                errno = 0;
            if (status > 0) {
                char what[32];
                snprintf(what, sizeof what, "status %d", status);
                note_error(c, what);
            } else if (status == 0) {
                note_error(c, "closed by server");
            } else {
                note_error(c, "read");
            }
            close(fd);
            fd = -1;
            continue;
        }
        record(c, now_ns() - t0);
        if (close_after) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void *run_conn(struct client *c) {
    char buf[16384];
    long done = 0;
    while (per_client > 0 ? done < per_client : claim()) {
        done++;
        uint64_t t0 = now_ns();
        int fd = connect_unix();
        if (fd < 0) {
            note_error(c, "connect");
            usleep(1000);
            continue;
        }
        int close_after;
        int status = -1;
        if (write_all(fd, request_buf, request_len) == 0)
            status = read_http_response(fd, buf, sizeof buf, &close_after);
        close(fd);
        if (status != 200) {
            char what[32];
            snprintf(what, sizeof what, "status %d", status);
            if (status >= 0)
                errno = 0;
            note_error(c, what);
            continue;
        }
        record(c, now_ns() - t0);
    }
    return NULL;
}

static void *run_gitcache(struct client *c) {
    char buf[4096];
    long done = 0;
    while (per_client > 0 ? done < per_client : claim()) {
        done++;
        uint64_t t0 = now_ns();
        int fd = connect_unix();
        if (fd < 0) {
            note_error(c, "connect");
            usleep(1000);
            continue;
        }
        if (write_all(fd, request_buf, request_len) < 0) {
            note_error(c, "write");
            close(fd);
            continue;
        }
        shutdown(fd, SHUT_WR);
        size_t have = 0;
        ssize_t r;
        while ((r = read(fd, buf + have, sizeof buf - 1 - have)) != 0) {
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                break;
            }
            have += (size_t)r;
            if (have == sizeof buf - 1)
                break;
        }
        close(fd);
        buf[have] = 0;
        if (r < 0 || !strstr(buf, "password=")) {
            if (r >= 0)
                errno = 0;
            note_error(c, "no password in answer");
            continue;
        }
        record(c, now_ns() - t0);
    }
    return NULL;
}

static void *client_main(void *arg) {
    struct client *c = arg;
    c->fd = -1;
    if (preconnect && mode == MODE_KEEPALIVE) {
        c->fd = connect_unix();
        if (c->fd < 0)
            note_error(c, "connect");
        else
            c->reconnects++;
    }
    pthread_barrier_wait(&start_barrier);
    switch (mode) {
    case MODE_KEEPALIVE:
        return run_keepalive(c);
    case MODE_CONN:
        return run_conn(c);
    case MODE_GITCACHE:
        return run_gitcache(c);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double p) {
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i] / 1e6;
}

static void sleep_s(double s) {
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- trivial canned server: the generator's own ceiling ---- */

static const char canned_body[] =
    "{\"profile\": \"default\", \"access_token\": \"tok-0123456789abcdef0123456789abcdef\", "
    "\"token_type\": \"Bearer\", \"expires_at\": \"2030-01-01T00:00:00Z\", \"expires_in\": 3000}";
static char canned_http[512];
static size_t canned_http_len;
static const char canned_git[] = "username=default\npassword=tok-0123456789abcdef0123456789abcdef\n";

struct conn {
    int fd;
    size_t have;
    char buf[2048];
};

static int serve(const char *path, double max_s) {
    canned_http_len = (size_t)snprintf(canned_http, sizeof canned_http,
                                       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                       "Content-Length: %zu\r\n\r\n%s",
                                       sizeof canned_body - 1, canned_body);
    unlink(path);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        perror("serve: bind/listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    fprintf(stderr, "ready\n");
    uint64_t deadline = now_ns() + (uint64_t)(max_s * 1e9);
    struct epoll_event events[64];
    while (now_ns() < deadline) {
        int n = epoll_wait(ep, events, 64, 200);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int drop = 0;
            for (;;) {
                ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have);
                if (r < 0) {
                    if (errno != EAGAIN)
                        drop = 1;
                    break;
                }
                if (r == 0) {
                    /* git's protocol: the request ends at EOF, then we answer and close */
                    if (c->have >= 7 && memcmp(c->buf, "action=", 7) == 0)
                        write_all(c->fd, canned_git, sizeof canned_git - 1);
                    drop = 1;
                    break;
                }
                c->have += (size_t)r;
                c->buf[c->have] = 0;
                char *end;
                while ((end = strstr(c->buf, "\r\n\r\n"))) {
                    int close_it = strcasestr(c->buf, "Connection: close") != NULL &&
                                   strcasestr(c->buf, "Connection: close") < end;
                    write_all(c->fd, canned_http, canned_http_len);
                    size_t used = (size_t)(end + 4 - c->buf);
                    memmove(c->buf, end + 4, c->have - used + 1);
                    c->have -= used;
                    if (close_it) {
                        drop = 1;
                        break;
                    }
                }
                if (drop || c->have == sizeof c->buf - 1) {
                    drop = 1;
                    break;
                }
            }
            if (drop) {
                close(c->fd);
                free(c);
            }
        }
    }
    unlink(path);
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --socket PATH [--mode keepalive|conn|gitcache] [--clients N]\n"
            "               (--duration S | --requests N | --per-client N) [--warmup S]\n"
            "               [--path /v1/token?profile=default] [--git-host HOST] [--timeout S]\n"
            "               [--preconnect 1]   (keepalive: connect before the start)\n"
            "               [--tcp 127.0.0.1:PORT] [--header 'Name: value']   (keepalive)\n"
            "       loadgen --serve PATH [--duration S]   (trivial canned server)\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *serve_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--socket"))
            sock_path = v;
        else if (!strcmp(a, "--serve"))
            serve_path = v;
        else if (!strcmp(a, "--mode")) {
            if (!strcmp(v, "keepalive"))
                mode = MODE_KEEPALIVE;
            else if (!strcmp(v, "conn"))
                mode = MODE_CONN;
            else if (!strcmp(v, "gitcache"))
                mode = MODE_GITCACHE;
            else
                usage();
        } else if (!strcmp(a, "--clients"))
            nclients = atoi(v);
        else if (!strcmp(a, "--duration"))
            duration_s = atof(v);
        else if (!strcmp(a, "--requests"))
            total_requests = atol(v);
        else if (!strcmp(a, "--per-client"))
            per_client = atol(v);
        else if (!strcmp(a, "--warmup"))
            warmup_s = atof(v);
        else if (!strcmp(a, "--path"))
            req_path = v;
        else if (!strcmp(a, "--git-host"))
            git_host = v;
        else if (!strcmp(a, "--timeout"))
            timeout_s = atoi(v);
        else if (!strcmp(a, "--preconnect"))
            preconnect = atoi(v);
        else if (!strcmp(a, "--tcp")) {
            tcp_target = v;
            snprintf(host_header, sizeof host_header, "%s", v);
        } else if (!strcmp(a, "--header"))
            extra_header = v;
        else
            usage();
    }
    signal(SIGPIPE, SIG_IGN);
    if (serve_path)
        return serve(serve_path, duration_s > 0 ? duration_s : 600);
    if (tcp_target && !sock_path)
        sock_path = tcp_target;
    if (!sock_path || nclients < 1 || (duration_s <= 0 && total_requests <= 0 && per_client <= 0))
        usage();
    /* Bounded by construction: a duration, a shared request budget or a per-client count. */
    if (duration_s > 600)
        duration_s = 600;

    switch (mode) {
    case MODE_KEEPALIVE:
        request_len = (size_t)snprintf(request_buf, sizeof request_buf,
                                       "GET %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n", req_path,
                                       host_header, extra_header ? extra_header : "",
                                       extra_header ? "\r\n" : "");
        break;
    case MODE_CONN:
        request_len = (size_t)snprintf(request_buf, sizeof request_buf,
                                       "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                                       req_path);
        break;
    case MODE_GITCACHE:
        request_len = (size_t)snprintf(request_buf, sizeof request_buf,
                                       "action=get\ntimeout=900\nprotocol=https\nhost=%s\n\n", git_host);
        break;
    }

    atomic_store(&budget, total_requests);
    atomic_store(&recording, warmup_s <= 0);
    struct client *clients = calloc((size_t)nclients, sizeof *clients);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    pthread_barrier_init(&start_barrier, NULL, (unsigned)nclients + 1);
    for (int i = 0; i < nclients; i++) {
        if (pthread_create(&clients[i].tid, &attr, client_main, &clients[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    pthread_barrier_wait(&start_barrier);
    uint64_t t_start = now_ns();
    if (warmup_s > 0) {
        sleep_s(warmup_s);
        t_start = now_ns();
        atomic_store(&recording, 1);
    }
    if (duration_s > 0) {
        sleep_s(duration_s);
        atomic_store(&stop_flag, 1);
    }
    for (int i = 0; i < nclients; i++)
        pthread_join(clients[i].tid, NULL);
    uint64_t t_end = now_ns();

    size_t total = 0;
    long errors = 0, reconnects = 0;
    const char *first_error = "";
    for (int i = 0; i < nclients; i++) {
        total += clients[i].n;
        errors += clients[i].errors;
        reconnects += clients[i].reconnects;
        if (!first_error[0] && clients[i].first_error[0])
            first_error = clients[i].first_error;
    }
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    double sum = 0;
    for (int i = 0; i < nclients; i++) {
        memcpy(all + k, clients[i].lat, clients[i].n * sizeof *all);
        k += clients[i].n;
        for (size_t j = 0; j < clients[i].n; j++)
            sum += (double)clients[i].lat[j];
    }
    qsort(all, total, sizeof *all, cmp_u64);
    double elapsed = (double)(t_end - t_start) / 1e9;
    static const char *names[] = {"keepalive", "conn", "gitcache"};
    char safe_err[160];
    size_t j = 0;
    for (const char *p = first_error; *p && j < sizeof safe_err - 1; p++)
        safe_err[j++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 32) ? '\'' : *p;
    safe_err[j] = 0;
    printf("{\"mode\": \"%s\", \"clients\": %d, \"requests\": %zu, \"errors\": %ld, "
           "\"connections\": %ld, \"elapsed_s\": %.4f, \"rps\": %.1f, \"mean_ms\": %.4f, "
           "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f, "
           "\"min_ms\": %.4f, \"first_error\": \"%s\"}\n",
           names[mode], nclients, total, errors,
           mode == MODE_KEEPALIVE ? reconnects : (long)total, elapsed,
           elapsed > 0 ? (double)total / elapsed : 0.0, total ? sum / (double)total / 1e6 : 0.0,
           pct(all, total, 0.50), pct(all, total, 0.90), pct(all, total, 0.99),
           pct(all, total, 1.0), pct(all, total, 0.0), safe_err);
    return errors && !total ? 1 : 0;
}
