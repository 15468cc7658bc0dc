/*
 * The physical-limit target of `make bench`: a minimal HTTP/1.1 keep-alive server in C.
 *
 *     epoll_server [PORT]      binds 127.0.0.1:PORT (0: any), prints "READY <port>", serves
 *                              until SIGTERM.
 *
 * One thread, one epoll set, level-triggered, non-blocking sockets. Every request, whatever
 * its method and path, is answered with a device's synchronous answer (201 and the response
 * JSON of an OpenGate operation) that echoes the request's "id" and "name" and the device id
 * of the path, so that a sender takes its ordinary path (an answer that fits its operation).
 *
 * Parsing is just enough to find where each request ends: the head up to CRLF CRLF, then a
 * Content-Length body. Several requests in one read (pipelining) are answered in order, and
 * the answers go out in one write. A chunked request or a head over 64 KiB closes the
 * connection; there is nothing else to go wrong here, since the clients are our benchmarks.
 *
 * `make bench` compiles this file with the system compiler (cc -O2) into a temporary directory
 * and pins the process to one core; its CPU per request is the reference for what one HTTP
 * exchange over loopback costs at the least on the machine.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define MAX_HEAD 65536
#define MAX_BODY (1 << 20)
#define MAX_FIELD 128

struct conn {
    int fd;
    int want_out;          /* EPOLLOUT is in the interest set */
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
};

static int epfd;

static int reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need) cap2 *= 2;
    char *p = realloc(*buf, cap2);
    if (!p) return -1;
    *buf = p;
    *cap = cap2;
    return 0;
}

static void close_conn(struct conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* The quoted string value after `key` (e.g. "\"id\":\"") in [p, end), copied to dst. */
static size_t field(const char *p, const char *end, const char *key, char *dst) {
    size_t klen = strlen(key);
    const char *at = memmem(p, (size_t)(end - p), key, klen);
    if (!at) return 0;
    at += klen;
    size_t n = 0;
    while (at + n < end && at[n] != '"' && n < MAX_FIELD - 1) n++;
    memcpy(dst, at, n);
    return n;
}

/* Content-Length of the head [p, end), 0 when absent; -1 for a chunked or unreadable head. */
static long content_length(const char *p, const char *end) {
    long length = 0;
    const char *line = memchr(p, '\n', (size_t)(end - p));
    while (line && line + 1 < end) {
        line++;
        size_t left = (size_t)(end - line);
        if (left > 15 && strncasecmp(line, "content-length:", 15) == 0) {
            length = strtol(line + 15, NULL, 10);
            if (length < 0 || length > MAX_BODY) return -1;
        } else if (left > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0) {
            return -1;
        }
        line = memchr(line, '\n', left);
    }
    return length;
}

static int answer(struct conn *c, const char *head, size_t head_len, const char *body,
                  size_t body_len) {
    char id[MAX_FIELD] = "", name[MAX_FIELD] = "", device[MAX_FIELD] = "";
    size_t id_len = field(body, body + body_len, "\"id\":\"", id);
    size_t name_len = field(body, body + body_len, "\"name\":\"", name);
    const char *line_end = memchr(head, '\r', head_len);
    size_t device_len = line_end ? field(head, line_end, "/devices/", device) : 0;
    /* field() stops at a quote; a device id ends at the next slash. */
    char *slash = memchr(device, '/', device_len);
    if (slash) device_len = (size_t)(slash - device);
    char json[1024];
    int json_len = snprintf(
        json, sizeof json,
        "{\"version\":\"1.0\",\"operation\":{\"response\":{\"id\":\"%.*s\","
        "\"timestamp\":1432454278950,\"deviceId\":\"%.*s\",\"name\":\"%.*s\","
        "\"resultCode\":\"SUCCESSFUL\",\"resultDescription\":\"Success\",\"steps\":[]}}}",
        (int)id_len, id, (int)device_len, device, (int)name_len, name);
    if (reserve(&c->out, &c->out_cap, c->out_len + (size_t)json_len + 128) < 0) return -1;
    int n = snprintf(c->out + c->out_len, c->out_cap - c->out_len,
                     "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     json_len, json);
    c->out_len += (size_t)n;
    return 0;
}

/* Answer every complete request in the input buffer; -1 closes the connection. */
static int consume(struct conn *c) {
    size_t pos = 0;
    while (pos < c->in_len) {
        const char *start = c->in + pos;
        size_t avail = c->in_len - pos;
        const char *end = memmem(start, avail, "\r\n\r\n", 4);
        if (!end) {
            if (avail > MAX_HEAD) return -1;
            break;
        }
        size_t head_len = (size_t)(end - start) + 4;
        long body_len = content_length(start, end + 2);
        if (body_len < 0) return -1;
        if (avail < head_len + (size_t)body_len) break;
        if (answer(c, start, head_len, start + head_len, (size_t)body_len) < 0) return -1;
        pos += head_len + (size_t)body_len;
    }
    if (pos) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return 0;
}

static int flush_out(struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    int want = c->out_len > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
    return 0;
}

static int on_readable(struct conn *c) {
    if (reserve(&c->in, &c->in_cap, c->in_len + 16384) < 0) return -1;
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == 0) return -1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    c->in_len += (size_t)n;
    if (consume(c) < 0) return -1;
    return flush_out(c);
}

static void on_accept(int listener) {
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or EMFILE: the next wake-up tries again */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
        }
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(listener, 4096) < 0 || getsockname(listener, (struct sockaddr *)&addr, &len) < 0) {
        perror("epoll_server: listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    static int listener_tag;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
    printf("READY %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) {
            perror("epoll_server: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == &listener_tag) {
                on_accept(listener);
                continue;
            }
            struct conn *c = events[i].data.ptr;
            int failed = 0;
            if (events[i].events & (EPOLLERR | EPOLLHUP)) failed = 1;
            if (!failed && (events[i].events & EPOLLOUT)) failed = flush_out(c) < 0;
            if (!failed && (events[i].events & EPOLLIN)) failed = on_readable(c) < 0;
            if (failed) close_conn(c);
        }
    }
}
