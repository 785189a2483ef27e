/*
 * wsload: a single-threaded epoll WebSocket load generator for the pub/sub benchmarks.
 *
 * Why C: the load generator must cost clearly less CPU per delivered message than the
 * server it drives (bench/README.md has the measured figures). This one does one recv()
 * per readable socket, walks the RFC 6455 frame headers in the byte stream, and reads the
 * sequence number and send timestamp out of each delivered frame with memmem() (no JSON
 * decoding), so every delivery is counted, de-duplicated (per-subscriber bitmap) and timed.
 *
 * Every connection does a real RFC 6455 handshake (random Sec-WebSocket-Key, the
 * Sec-WebSocket-Accept is checked) and every client->server frame is masked.
 *
 * Protocols (--proto):
 *   env  BosBase JSON envelopes on --path (default /api/pubsub): waits for "ready",
 *        subscribers send {"type":"subscribe"} and wait for "subscribed", publishers send
 *        {"type":"publish"} and count "published" acks. Also the bare `ws` baseline.
 *   sio  Engine.IO 4 / Socket.IO 4 over a websocket (path /socket.io/?EIO=4&transport=websocket):
 *        "0{..}" open -> "40" -> "40{sid}", subscribers emit 42N["subscribe",topic] (acked),
 *        publishers emit 42N["publish",{topic,data}] (acked), deliveries are 42["message",{..}],
 *        server pings "2" are answered "3".
 *
 * Control: after setup it prints one JSON line {"event":"ready",...} on stdout and then
 * reads commands, one per line, on stdin; each prints one JSON result line:
 *   fanout RATE DURATION_S DRAIN_S   open-loop publishing at RATE msg/s (round-robin over the
 *                                    publishers) for DURATION_S, then waits at most DRAIN_S
 *                                    for the missing deliveries. Prints {"event":"window_end"}
 *                                    when publishing stops, then {"event":"fanout",...}.
 *   acked CONC DURATION_S            closed loop: CONC publishers each send a publish and wait
 *                                    for its ack before sending the next one.
 *   burst CONC DURATION_S DRAIN_S MAX
 *                                    the same closed loop (publishers at full speed), while the
 *                                    subscribers count, de-duplicate and time every delivery as
 *                                    in fanout: at most MAX messages (the bitmap is --subs x MAX
 *                                    bits), for at most DURATION_S, then waits at most DRAIN_S for
 *                                    the missing deliveries. Prints {"event":"window_end"}, then
 *                                    {"event":"burst",...} (deliveries/s, lost, duplicates, the
 *                                    delivery latency of the probes from each publish's send,
 *                                    the ack latency, the load generator's CPU).
 *   quit
 * It exits on "quit", on EOF on stdin (its parent is gone), and after --max-lifetime seconds.
 *
 * Published data: {"bs":STEP,"bq":SEQ,"bt":SEND_NS,"bp":"xxxx"} where SEND_NS is the
 * scheduled send time on CLOCK_MONOTONIC (open loop, so a late send counts as latency).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ utilities */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("{\"event\":\"error\",\"message\":\"");
    for (char *p = msg; *p; p++) {
        if (*p == '"' || *p == '\\') putchar('\\');
        putchar(*p == '\n' ? ' ' : *p);
    }
    printf("\"}\n");
    fflush(stdout);
    exit(2);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng32(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return (uint32_t)(x >> 16);
}

/* SHA-1 (RFC 3174), only for checking Sec-WebSocket-Accept. */
typedef struct {
    uint32_t h[5];
    uint64_t len;
    uint8_t buf[64];
    size_t n;
} sha1_ctx;
#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
static void sha1_block(sha1_ctx *c, const uint8_t *p) {
    uint32_t w[80], a, b, cc, d, e, t;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3], e = c->h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) f = (b & cc) | (~b & d), k = 0x5A827999;
        else if (i < 40) f = b ^ cc ^ d, k = 0x6ED9EBA1;
        else if (i < 60) f = (b & cc) | (b & d) | (cc & d), k = 0x8F1BBCDC;
        else f = b ^ cc ^ d, k = 0xCA62C1D6;
        t = ROL(a, 5) + f + e + k + w[i];
        e = d, d = cc, cc = ROL(b, 30), b = a, a = t;
    }
    c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d, c->h[4] += e;
}
static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    sha1_ctx c = {{0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0}, 0, {0}, 0};
    c.len = len;
    while (len >= 64) sha1_block(&c, data), data += 64, len -= 64;
    memcpy(c.buf, data, len);
    c.buf[len++] = 0x80;
    if (len > 56) {
        memset(c.buf + len, 0, 64 - len);
        sha1_block(&c, c.buf);
        len = 0;
    }
    memset(c.buf + len, 0, 56 - len);
    uint64_t bits = c.len * 8;
    for (int i = 0; i < 8; i++) c.buf[63 - i] = (uint8_t)(bits >> (8 * i));
    sha1_block(&c, c.buf);
    for (int i = 0; i < 5; i++)
        out[4 * i] = c.h[i] >> 24, out[4 * i + 1] = c.h[i] >> 16, out[4 * i + 2] = c.h[i] >> 8,
                out[4 * i + 3] = c.h[i];
}
static void base64(const uint8_t *in, size_t n, char *out) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0, o = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tbl[v >> 18], out[o++] = tbl[(v >> 12) & 63], out[o++] = tbl[(v >> 6) & 63],
        out[o++] = tbl[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = tbl[v >> 18], out[o++] = tbl[(v >> 12) & 63], out[o++] = '=', out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = tbl[v >> 18], out[o++] = tbl[(v >> 12) & 63], out[o++] = tbl[(v >> 6) & 63],
        out[o++] = '=';
    }
    out[o] = 0;
}

/* Latency histogram in microseconds: exact below 128 us, then 64 sub-buckets per power of
 * two (<= 1.6 % relative error). */
#define HIST_N (128 + 64 * 40)
typedef struct {
    uint64_t b[HIST_N];
    uint64_t n, max;
} hist;
static int hist_idx(uint64_t v) {
    if (v < 128) return (int)v;
    int shift = 63 - __builtin_clzll(v) - 6;
    int idx = 128 + (shift - 1) * 64 + (int)((v >> shift) - 64);
    return idx < HIST_N ? idx : HIST_N - 1;
}
static double hist_val(int idx) {
    if (idx < 128) return idx;
    int shift = (idx - 128) / 64 + 1;
    uint64_t mant = (uint64_t)((idx - 128) % 64 + 64);
    return (double)(mant << shift) + (double)(1ull << shift) / 2.0;
}
static void hist_add(hist *h, uint64_t us) {
    h->b[hist_idx(us)]++;
    h->n++;
    if (us > h->max) h->max = us;
}
static double hist_pct(const hist *h, double p) {
    if (!h->n) return -1;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->n);
    if (want >= h->n) want = h->n - 1;
    uint64_t acc = 0;
    for (int i = 0; i < HIST_N; i++) {
        acc += h->b[i];
        if (acc > want) return hist_val(i);
    }
    return (double)h->max;
}
static void hist_json(const hist *h, char *out, size_t sz) {
    snprintf(out, sz,
             "{\"count\":%llu,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
             "\"max_ms\":%.3f}",
             (unsigned long long)h->n, hist_pct(h, 50) / 1e3, hist_pct(h, 90) / 1e3,
             hist_pct(h, 99) / 1e3, hist_pct(h, 99.9) / 1e3, (double)h->max / 1e3);
}

/* ------------------------------------------------------------------ options */

enum { PROTO_ENV, PROTO_SIO };
static struct {
    const char *host;
    int port;
    int proto;
    const char *path;
    const char *token;
    const char *topic;
    int subs, pubs;
    int payload;
    int src_addrs;
    int connect_batch;
    int probes;
    int bulk_interval_ms;
    double setup_timeout;
    double max_lifetime;
} opt = {"127.0.0.1", 8090, PROTO_ENV, NULL, NULL, "bench", 100, 1, 64, 1, 200, 10, 50, 120.0, 3600.0};

/* ------------------------------------------------------------------ connections */

enum { ST_CONNECTING, ST_HTTP, ST_WAIT_READY, ST_WAIT_SIO_CONNECT, ST_WAIT_SUB, ST_ACTIVE, ST_CLOSED };
enum { ROLE_SUB, ROLE_PUB };

typedef struct {
    int fd;
    int epfd;
    uint8_t role, state, frag, want_out, probe;
    char *in;
    uint32_t inlen, incap;
    char *out;
    uint32_t outlen, outoff, outcap;
    char accept[32];
    /* acked mode */
    uint64_t sent_ns;
    int inflight;
} conn;

static conn *conns;
static int nconns, started, nready, nclosed, ep, ep_bulk;
static struct sockaddr_in dst;
#define ID_STDIN 0xFFFFFFF0u
#define ID_TIMER 0xFFFFFFF1u

static char rbuf[1 << 18];
static char sbuf[1 << 18];

static void conn_close(conn *c, int idx);

static void watch(conn *c, int idx, int want_out) {
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.u32 = (uint32_t)idx};
    epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = (uint8_t)want_out;
}

static void conn_write(conn *c, int idx, const char *p, size_t n) {
    if (c->state == ST_CLOSED) return;
    if (c->outlen == c->outoff) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w == (ssize_t)n) return;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                conn_close(c, idx);
                return;
            }
            w = 0;
        }
        p += w, n -= (size_t)w;
        c->outlen = c->outoff = 0;
    }
    if (c->outlen + n > c->outcap) {
        if (c->outoff) {
            memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
            c->outlen -= c->outoff, c->outoff = 0;
        }
        while (c->outlen + n > c->outcap) c->outcap = c->outcap ? c->outcap * 2 : 4096;
        c->out = realloc(c->out, c->outcap);
    }
    memcpy(c->out + c->outlen, p, n);
    c->outlen += (uint32_t)n;
    if (!c->want_out) watch(c, idx, 1);
}

static void conn_flush(conn *c, int idx) {
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            conn_close(c, idx);
            return;
        }
        c->outoff += (uint32_t)w;
    }
    c->outlen = c->outoff = 0;
    watch(c, idx, 0);
}

/* One masked client->server frame. */
static void ws_send(conn *c, int idx, int opcode, const char *p, size_t n) {
    char stackbuf[4096];
    char *f = n + 14 <= sizeof stackbuf ? stackbuf : malloc(n + 14);
    size_t h = 0;
    f[h++] = (char)(0x80 | opcode);
    if (n < 126) f[h++] = (char)(0x80 | n);
    else if (n < 65536) f[h++] = (char)(0x80 | 126), f[h++] = (char)(n >> 8), f[h++] = (char)n;
    else {
        f[h++] = (char)(0x80 | 127);
        for (int i = 7; i >= 0; i--) f[h++] = (char)((uint64_t)n >> (8 * i));
    }
    uint32_t m = rng32();
    uint8_t mk[4] = {(uint8_t)m, (uint8_t)(m >> 8), (uint8_t)(m >> 16), (uint8_t)(m >> 24)};
    memcpy(f + h, mk, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) f[h + i] = (char)(p[i] ^ mk[i & 3]);
    conn_write(c, idx, f, h + n);
    if (f != stackbuf) free(f);
}
static void ws_text(conn *c, int idx, const char *p, size_t n) { ws_send(c, idx, 1, p, n); }

/* ------------------------------------------------------------------ run state */

enum { M_SETUP, M_IDLE, M_FANOUT, M_DRAIN, M_ACKED, M_ACKED_DRAIN, M_BURST, M_BURST_DRAIN };
static int mode = M_SETUP;
static uint64_t setup_start, mode_deadline, t0;
static int timerfd;

/* fan-out step */
static uint64_t step, nmsg, sent, interval_ns, window_end_ns, last_delivery_ns;
static double rate;
static uint64_t delivered, delivered_window, dups, stale, acks, pub_errors, other_frames;
static uint8_t *bits;
static hist lat, ack_lat;
static char first_error[200];

/* acked step */
static int conc;
static uint64_t acked_seq;

static void note_error(const char *p, size_t n) {
    pub_errors++;
    if (!first_error[0]) {
        size_t k = 0;
        for (size_t i = 0; i < n && k < sizeof first_error - 2; i++)
            first_error[k++] = (p[i] == '"' || p[i] == '\\' || (unsigned char)p[i] < 32) ? '\'' : p[i];
        first_error[k] = 0;
    }
}

static int64_t parse_int_after(const char *p, size_t n, const char *key, size_t klen, const char **endp) {
    const char *k = memmem(p, n, key, klen);
    if (!k) return -1;
    const char *q = k + klen, *e = p + n;
    while (q < e && (*q == ' ')) q++;
    int64_t v = 0;
    int any = 0;
    while (q < e && *q >= '0' && *q <= '9') v = v * 10 + (*q++ - '0'), any = 1;
    if (endp) *endp = q;
    return any ? v : -1;
}

/* env: the value of "type" (without quotes) */
static int env_type_is(const char *p, size_t n, const char *want) {
    const char *k = memmem(p, n, "\"type\"", 6);
    if (!k) return 0;
    const char *q = k + 6, *e = p + n;
    while (q < e && (*q == ' ' || *q == ':')) q++;
    if (q >= e || *q != '"') return 0;
    q++;
    size_t wl = strlen(want);
    return (size_t)(e - q) > wl && memcmp(q, want, wl) == 0 && q[wl] == '"';
}

static void on_delivery(int idx, const char *p, size_t n, uint64_t now) {
    const char *at = p, *end;
    int64_t bs = parse_int_after(at, n, "\"bs\":", 5, &end);
    if (bs < 0) {
        other_frames++;
        return;
    }
    size_t rest = n - (size_t)(end - p);
    int64_t bq = parse_int_after(end, rest, "\"bq\":", 5, &end);
    if (bq < 0) bq = parse_int_after(p, n, "\"bq\":", 5, NULL), end = p;
    rest = n - (size_t)(end - p);
    int64_t bt = parse_int_after(end, rest, "\"bt\":", 5, NULL);
    if (bt < 0) bt = parse_int_after(p, n, "\"bt\":", 5, NULL);
    int counting = mode == M_FANOUT || mode == M_DRAIN || mode == M_BURST || mode == M_BURST_DRAIN;
    if (!counting || (uint64_t)bs != step || bq < 0 || (uint64_t)bq >= nmsg) {
        stale++;
        return;
    }
    uint64_t bit = (uint64_t)idx * nmsg + (uint64_t)bq;
    if (bits[bit >> 3] & (1u << (bit & 7))) {
        dups++;
        return;
    }
    bits[bit >> 3] |= (uint8_t)(1u << (bit & 7));
    delivered++;
    if (now <= window_end_ns || mode == M_FANOUT || mode == M_BURST) delivered_window++;
    last_delivery_ns = now;
    if (!conns[idx].probe || bt <= 0) return; /* bulk subscribers are read late on purpose */
    hist_add(&lat, now > (uint64_t)bt ? (now - (uint64_t)bt) / 1000 : 0);
}

static void acked_send(conn *c, int idx, uint64_t now);

static void on_ack(conn *c, int idx, uint64_t now, int is_error, const char *p, size_t n) {
    if (is_error) note_error(p, n);
    else acks++;
    if ((mode == M_ACKED || mode == M_ACKED_DRAIN) && c->inflight) {
        c->inflight = 0;
        if (!is_error) hist_add(&lat, (now - c->sent_ns) / 1000);
        if (mode == M_ACKED && now < mode_deadline) acked_send(c, idx, now);
    } else if ((mode == M_BURST || mode == M_BURST_DRAIN) && c->inflight) {
        c->inflight = 0;
        if (!is_error) hist_add(&ack_lat, (now - c->sent_ns) / 1000);
        if (mode == M_BURST && now < window_end_ns && acked_seq < nmsg) acked_send(c, idx, now);
    }
}

static void sub_ready(conn *c) {
    c->state = ST_ACTIVE;
    nready++;
}

static void send_subscribe(conn *c, int idx) {
    int n;
    if (opt.proto == PROTO_ENV)
        n = snprintf(sbuf, sizeof sbuf, "{\"type\":\"subscribe\",\"topic\":\"%s\",\"requestId\":\"s%d\"}",
                     opt.topic, idx);
    else n = snprintf(sbuf, sizeof sbuf, "420[\"subscribe\",\"%s\"]", opt.topic);
    c->state = ST_WAIT_SUB;
    ws_text(c, idx, sbuf, (size_t)n);
}

static void on_text(conn *c, int idx, const char *p, size_t n, uint64_t now) {
    if (opt.proto == PROTO_ENV) {
        switch (c->state) {
        case ST_WAIT_READY:
            if (!env_type_is(p, n, "ready")) die("expected ready, got %.*s", (int)(n > 200 ? 200 : n), p);
            if (c->role == ROLE_SUB) send_subscribe(c, idx);
            else sub_ready(c);
            return;
        case ST_WAIT_SUB:
            if (env_type_is(p, n, "subscribed")) sub_ready(c);
            else die("subscribe failed: %.*s", (int)(n > 200 ? 200 : n), p);
            return;
        case ST_ACTIVE:
            if (c->role == ROLE_SUB) {
                on_delivery(idx, p, n, now);
                return;
            }
            if (env_type_is(p, n, "published")) on_ack(c, idx, now, 0, p, n);
            else if (env_type_is(p, n, "error")) on_ack(c, idx, now, 1, p, n);
            else other_frames++;
            return;
        }
        return;
    }
    /* Engine.IO / Socket.IO */
    if (n == 1 && p[0] == '2') {
        ws_text(c, idx, "3", 1);
        return;
    }
    switch (c->state) {
    case ST_WAIT_READY:
        if (n < 1 || p[0] != '0') die("expected engine.io open packet, got %.*s", (int)(n > 200 ? 200 : n), p);
        ws_text(c, idx, "40", 2);
        c->state = ST_WAIT_SIO_CONNECT;
        return;
    case ST_WAIT_SIO_CONNECT:
        if (n < 2 || p[0] != '4' || p[1] != '0') die("socket.io connect failed: %.*s", (int)(n > 200 ? 200 : n), p);
        if (c->role == ROLE_SUB) send_subscribe(c, idx);
        else sub_ready(c);
        return;
    case ST_WAIT_SUB:
        if (n >= 3 && p[0] == '4' && p[1] == '3' && p[2] == '0') sub_ready(c);
        else die("socket.io subscribe failed: %.*s", (int)(n > 200 ? 200 : n), p);
        return;
    case ST_ACTIVE:
        if (n >= 2 && p[0] == '4' && p[1] == '2') {
            if (c->role == ROLE_SUB) on_delivery(idx, p, n, now);
            else other_frames++;
        } else if (n >= 2 && p[0] == '4' && p[1] == '3' && c->role == ROLE_PUB) {
            on_ack(c, idx, now, 0, p, n);
        } else if (n >= 2 && p[0] == '4' && p[1] == '4') {
            note_error(p, n);
        } else other_frames++;
        return;
    }
}

/* Parse as many complete frames as the buffer holds; returns bytes consumed. */
static size_t parse_frames(conn *c, int idx, char *p, size_t n, uint64_t now) {
    size_t off = 0;
    while (n - off >= 2) {
        uint8_t b0 = (uint8_t)p[off], b1 = (uint8_t)p[off + 1];
        size_t h = 2;
        uint64_t len = b1 & 0x7F;
        if (len == 126) {
            if (n - off < 4) break;
            len = (uint64_t)(uint8_t)p[off + 2] << 8 | (uint8_t)p[off + 3];
            h = 4;
        } else if (len == 127) {
            if (n - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | (uint8_t)p[off + 2 + i];
            h = 10;
        }
        if (b1 & 0x80) h += 4; /* servers must not mask, tolerate it anyway */
        if (n - off < h + len) break;
        char *pl = p + off + h;
        if (b1 & 0x80) {
            uint8_t *mk = (uint8_t *)p + off + h - 4;
            for (uint64_t i = 0; i < len; i++) pl[i] ^= (char)mk[i & 3];
        }
        int op = b0 & 0x0F, fin = b0 & 0x80;
        if (op == 9) ws_send(c, idx, 10, pl, (size_t)len);
        else if (op == 8) {
            off += h + len;
            conn_close(c, idx);
            return off;
        } else if (op == 1 || op == 2) {
            if (fin) on_text(c, idx, pl, (size_t)len, now);
            else c->frag = 1, other_frames++;
        } else if (op == 0 && fin && c->frag) {
            c->frag = 0; /* fragmented messages are not expected from these servers */
        }
        off += h + len;
        if (c->state == ST_CLOSED) return off;
    }
    return off;
}

static void on_http(conn *c, int idx, uint64_t now) {
    char *e = memmem(c->in, c->inlen, "\r\n\r\n", 4);
    if (!e) {
        if (c->inlen > 16384) die("handshake response too large");
        return;
    }
    size_t hl = (size_t)(e - c->in) + 4;
    if (c->inlen < 12 || memcmp(c->in + 9, "101", 3) != 0)
        die("handshake refused: %.*s", (int)(hl > 300 ? 300 : hl), c->in);
    int ok = 0;
    for (char *l = c->in; l < e;) {
        char *nl = memmem(l, (size_t)(e - l) + 2, "\r\n", 2);
        if (!nl) break;
        if ((size_t)(nl - l) > 21 && strncasecmp(l, "sec-websocket-accept:", 21) == 0) {
            char *v = l + 21;
            while (*v == ' ') v++;
            ok = (size_t)(nl - v) == strlen(c->accept) && memcmp(v, c->accept, strlen(c->accept)) == 0;
        }
        l = nl + 2;
    }
    if (!ok) die("bad Sec-WebSocket-Accept");
    c->state = ST_WAIT_READY;
    size_t rest = c->inlen - hl;
    memmove(c->in, c->in + hl, rest);
    c->inlen = (uint32_t)rest;
    size_t used = parse_frames(c, idx, c->in, c->inlen, now);
    memmove(c->in, c->in + used, c->inlen - used);
    c->inlen -= (uint32_t)used;
}

static void on_readable(conn *c, int idx, uint64_t now) {
    if (c->state == ST_HTTP) {
        if (c->incap - c->inlen < 4096) {
            c->incap = c->incap ? c->incap * 2 : 8192;
            c->in = realloc(c->in, c->incap);
        }
        ssize_t r = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            die("connection closed during handshake (%s)", r < 0 ? strerror(errno) : "EOF");
        }
        c->inlen += (uint32_t)r;
        on_http(c, idx, now);
        return;
    }
    /* Copy any partial frame to the front of the shared buffer, then read behind it. */
    size_t have = c->inlen;
    if (have > sizeof rbuf / 2) {
        /* a huge frame: grow its own buffer and read straight into it */
        if (c->incap - c->inlen < 65536) {
            c->incap = c->incap * 2 + 65536;
            c->in = realloc(c->in, c->incap);
        }
        ssize_t r = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
            conn_close(c, idx);
            return;
        }
        c->inlen += (uint32_t)r;
        size_t used = parse_frames(c, idx, c->in, c->inlen, now);
        memmove(c->in, c->in + used, c->inlen - used);
        c->inlen -= (uint32_t)used;
        return;
    }
    if (have) memcpy(rbuf, c->in, have);
    ssize_t r = recv(c->fd, rbuf + have, sizeof rbuf - have, 0);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (mode == M_SETUP) die("connection %d closed during setup (%s)", idx, r < 0 ? strerror(errno) : "EOF");
        conn_close(c, idx);
        return;
    }
    size_t total = have + (size_t)r;
    size_t used = parse_frames(c, idx, rbuf, total, now);
    if (c->state == ST_CLOSED) return;
    size_t left = total - used;
    if (left > c->incap) {
        c->incap = (uint32_t)(left < 4096 ? 4096 : left * 2);
        c->in = realloc(c->in, c->incap);
    }
    if (left) memcpy(c->in, rbuf + used, left);
    c->inlen = (uint32_t)left;
}

static void conn_close(conn *c, int idx) {
    (void)idx;
    if (c->state == ST_CLOSED) return;
    epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_CLOSED;
    nclosed++;
    if (mode == M_SETUP) die("connection %d closed during setup", idx);
}

static void start_connect(int idx) {
    conn *c = &conns[idx];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.src_addrs > 1) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7F000001u + (uint32_t)(idx % opt.src_addrs));
        setsockopt(c->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
#ifdef IP_BIND_ADDRESS_NO_PORT
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind: %s", strerror(errno));
    }
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS)
        die("connect: %s", strerror(errno));
    c->state = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)idx};
    c->want_out = 1;
    c->epfd = ep;
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    started++;
}

static void on_connected(conn *c, int idx) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    if (err) die("connect to %s:%d failed: %s", opt.host, opt.port, strerror(err));
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rng32();
        memcpy(raw + i, &r, 4);
    }
    char key[32];
    base64(raw, 16, key);
    char cat[96];
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t dig[20];
    sha1((uint8_t *)cat, strlen(cat), dig);
    base64(dig, 20, c->accept);
    int n = snprintf(sbuf, sizeof sbuf,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
                     opt.path, opt.host, opt.port, key);
    if (opt.token && c->role == ROLE_PUB)
        n += snprintf(sbuf + n, sizeof sbuf - (size_t)n, "Authorization: %s\r\n", opt.token);
    n += snprintf(sbuf + n, sizeof sbuf - (size_t)n, "\r\n");
    c->state = ST_HTTP;
    watch(c, idx, 0);
    conn_write(c, idx, sbuf, (size_t)n);
}

/* ------------------------------------------------------------------ publishing */

static char pad[65536 + 1];

static size_t build_publish(char *out, size_t cap, uint64_t seq, uint64_t ts) {
    int n;
    if (opt.proto == PROTO_ENV)
        n = snprintf(out, cap,
                     "{\"type\":\"publish\",\"topic\":\"%s\",\"requestId\":\"p%llu\",\"data\":{\"bs\":%llu,"
                     "\"bq\":%llu,\"bt\":%llu,\"bp\":\"%s\"}}",
                     opt.topic, (unsigned long long)seq, (unsigned long long)step,
                     (unsigned long long)seq, (unsigned long long)ts, pad);
    else
        n = snprintf(out, cap,
                     "42%llu[\"publish\",{\"topic\":\"%s\",\"data\":{\"bs\":%llu,\"bq\":%llu,\"bt\":%llu,"
                     "\"bp\":\"%s\"}}]",
                     (unsigned long long)(seq % 1000000000ull), opt.topic, (unsigned long long)step,
                     (unsigned long long)seq, (unsigned long long)ts, pad);
    return (size_t)n;
}

static void fanout_tick(uint64_t now) {
    uint64_t due = (now - t0) / interval_ns + 1;
    if (due > nmsg) due = nmsg;
    while (sent < due) {
        uint64_t ts = t0 + sent * interval_ns;
        int pi = opt.subs + (int)(sent % (uint64_t)opt.pubs);
        size_t n = build_publish(sbuf, sizeof sbuf, sent, ts);
        ws_text(&conns[pi], pi, sbuf, n);
        sent++;
    }
}

static void acked_send(conn *c, int idx, uint64_t now) {
    size_t n = build_publish(sbuf, sizeof sbuf, acked_seq++, now);
    c->sent_ns = now;
    c->inflight = 1;
    sent++;
    ws_text(c, idx, sbuf, n);
}

static void reset_counters(void) {
    sent = delivered = delivered_window = dups = stale = acks = pub_errors = other_frames = 0;
    last_delivery_ns = 0;
    memset(&lat, 0, sizeof lat);
    memset(&ack_lat, 0, sizeof ack_lat);
    first_error[0] = 0;
}

static double cpu_self_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}
static double cpu_at_start;

static void set_timer(uint64_t interval) {
    struct itimerspec its = {0};
    if (interval) {
        its.it_interval.tv_sec = (time_t)(interval / 1000000000ull);
        its.it_interval.tv_nsec = (long)(interval % 1000000000ull);
        its.it_value.tv_nsec = 1; /* fire right away */
    }
    timerfd_settime(timerfd, 0, &its, NULL);
}

static void cmd_fanout(double r, double dur, double drain) {
    if (opt.pubs < 1 || opt.subs < 1) die("fanout needs --subs and --pubs");
    if (r <= 0 || dur <= 0) die("bad fanout arguments");
    reset_counters();
    step++;
    rate = r;
    nmsg = (uint64_t)(r * dur + 0.5);
    if (nmsg < 1) nmsg = 1;
    free(bits);
    bits = calloc(((uint64_t)opt.subs * nmsg + 7) / 8 + 1, 1);
    if (!bits) die("out of memory for %llu x %d bitmap", (unsigned long long)nmsg, opt.subs);
    interval_ns = (uint64_t)(1e9 / r);
    if (interval_ns < 1) interval_ns = 1;
    cpu_at_start = cpu_self_s();
    t0 = now_ns();
    window_end_ns = t0 + (uint64_t)(dur * 1e9);
    mode_deadline = window_end_ns + (uint64_t)(drain * 1e9);
    /* tick at the publish interval, but at most every 200 us */
    set_timer(interval_ns < 200000 ? 200000 : interval_ns);
    mode = M_FANOUT;
    fanout_tick(t0);
}

static void fanout_report(uint64_t now) {
    set_timer(0);
    uint64_t expected = sent * (uint64_t)opt.subs;
    double pub_s = (double)(window_end_ns - t0) / 1e9;
    double span = last_delivery_ns > t0 ? (double)(last_delivery_ns - t0) / 1e9 : 0;
    char h[400];
    hist_json(&lat, h, sizeof h);
    printf("{\"event\":\"fanout\",\"step\":%llu,\"rate\":%.3f,\"subscribers\":%d,\"publishers\":%d,"
           "\"published\":%llu,\"acks\":%llu,\"publish_errors\":%llu,\"first_error\":\"%s\","
           "\"expected\":%llu,\"delivered\":%llu,\"delivered_in_window\":%llu,\"lost\":%llu,"
           "\"duplicates\":%llu,\"stale\":%llu,\"other_frames\":%llu,\"closed\":%d,"
           "\"publish_seconds\":%.4f,\"delivery_span_seconds\":%.4f,\"drain_seconds\":%.4f,"
           "\"offered_deliveries_per_s\":%.1f,\"deliveries_per_s\":%.1f,\"window_deliveries_per_s\":%.1f,"
           "\"latency\":%s,\"loadgen_cpu_s\":%.4f}\n",
           (unsigned long long)step, rate, opt.subs, opt.pubs, (unsigned long long)sent,
           (unsigned long long)acks, (unsigned long long)pub_errors, first_error,
           (unsigned long long)expected, (unsigned long long)delivered,
           (unsigned long long)delivered_window, (unsigned long long)(expected - delivered),
           (unsigned long long)dups, (unsigned long long)stale, (unsigned long long)other_frames, nclosed,
           pub_s, span, (double)(now - window_end_ns) / 1e9, rate * opt.subs,
           span > 0 ? (double)delivered / span : 0.0, (double)delivered_window / pub_s, h,
           cpu_self_s() - cpu_at_start);
    fflush(stdout);
    free(bits);
    bits = NULL;
    mode = M_IDLE;
}

static void cmd_acked(int c, double dur) {
    if (c < 1 || c > opt.pubs) die("acked: concurrency %d needs that many --pubs (have %d)", c, opt.pubs);
    reset_counters();
    step++;
    conc = c;
    cpu_at_start = cpu_self_s();
    t0 = now_ns();
    mode_deadline = t0 + (uint64_t)(dur * 1e9);
    mode = M_ACKED;
    for (int i = 0; i < conc; i++) acked_send(&conns[opt.subs + i], opt.subs + i, now_ns());
}

static void acked_report(uint64_t now) {
    double el = (double)(mode_deadline - t0) / 1e9;
    char h[400];
    hist_json(&lat, h, sizeof h);
    int inflight = 0;
    for (int i = 0; i < conc; i++) inflight += conns[opt.subs + i].inflight;
    printf("{\"event\":\"acked\",\"step\":%llu,\"concurrency\":%d,\"sent\":%llu,\"acks\":%llu,"
           "\"errors\":%llu,\"first_error\":\"%s\",\"unanswered\":%d,\"seconds\":%.4f,"
           "\"acks_per_s\":%.1f,\"latency\":%s,\"closed\":%d,\"loadgen_cpu_s\":%.4f,\"tail_s\":%.4f}\n",
           (unsigned long long)step, conc, (unsigned long long)sent, (unsigned long long)acks,
           (unsigned long long)pub_errors, first_error, inflight, el, (double)acks / el, h, nclosed,
           cpu_self_s() - cpu_at_start, (double)(now - mode_deadline) / 1e9);
    fflush(stdout);
    for (int i = 0; i < conc; i++) conns[opt.subs + i].inflight = 0;
    mode = M_IDLE;
}

static void cmd_burst(int c, double dur, double drain, double max) {
    if (opt.subs < 1) die("burst needs --subs");
    if (c < 1 || c > opt.pubs) die("burst: concurrency %d needs that many --pubs (have %d)", c, opt.pubs);
    if (dur <= 0 || drain < 0 || max < 1 || max > 1e9) die("bad burst arguments");
    reset_counters();
    step++;
    conc = c;
    nmsg = (uint64_t)max;
    acked_seq = 0;
    free(bits);
    bits = calloc(((uint64_t)opt.subs * nmsg + 7) / 8 + 1, 1);
    if (!bits) die("out of memory for %llu x %d bitmap", (unsigned long long)nmsg, opt.subs);
    cpu_at_start = cpu_self_s();
    t0 = now_ns();
    window_end_ns = t0 + (uint64_t)(dur * 1e9);
    mode_deadline = window_end_ns + (uint64_t)(drain * 1e9);
    mode = M_BURST;
    for (int i = 0; i < conc; i++) acked_send(&conns[opt.subs + i], opt.subs + i, now_ns());
}

static void burst_report(uint64_t now) {
    uint64_t expected = sent * (uint64_t)opt.subs;
    double pub_s = (double)(window_end_ns - t0) / 1e9;
    double span = last_delivery_ns > t0 ? (double)(last_delivery_ns - t0) / 1e9 : 0;
    char h[400], ha[400];
    hist_json(&lat, h, sizeof h);
    hist_json(&ack_lat, ha, sizeof ha);
    int inflight = 0;
    for (int i = 0; i < conc; i++) inflight += conns[opt.subs + i].inflight;
    printf("{\"event\":\"burst\",\"step\":%llu,\"concurrency\":%d,\"subscribers\":%d,\"max_messages\":%llu,"
           "\"published\":%llu,\"acks\":%llu,\"publish_errors\":%llu,\"first_error\":\"%s\","
           "\"unanswered\":%d,\"expected\":%llu,\"delivered\":%llu,\"delivered_in_window\":%llu,"
           "\"lost\":%llu,\"duplicates\":%llu,\"stale\":%llu,\"other_frames\":%llu,\"closed\":%d,"
           "\"publish_seconds\":%.4f,\"delivery_span_seconds\":%.4f,\"drain_seconds\":%.4f,"
           "\"publishes_per_s\":%.1f,\"acks_per_s\":%.1f,\"window_deliveries_per_s\":%.1f,"
           "\"latency\":%s,\"ack_latency\":%s,\"loadgen_cpu_s\":%.4f}\n",
           (unsigned long long)step, conc, opt.subs, (unsigned long long)nmsg, (unsigned long long)sent,
           (unsigned long long)acks, (unsigned long long)pub_errors, first_error, inflight,
           (unsigned long long)expected, (unsigned long long)delivered,
           (unsigned long long)delivered_window,
           (unsigned long long)(expected > delivered ? expected - delivered : 0),
           (unsigned long long)dups, (unsigned long long)stale, (unsigned long long)other_frames, nclosed,
           pub_s, span, (double)(now - window_end_ns) / 1e9, (double)sent / pub_s, (double)acks / pub_s,
           (double)delivered_window / pub_s, h, ha, cpu_self_s() - cpu_at_start);
    fflush(stdout);
    for (int i = 0; i < conc; i++) conns[opt.subs + i].inflight = 0;
    free(bits);
    bits = NULL;
    mode = M_IDLE;
}

/* ------------------------------------------------------------------ control */

static char line[1024];
static size_t linelen;

static void handle_command(char *l) {
    double a = 0, b = 0, c = 0, d = 0;
    if (sscanf(l, "fanout %lf %lf %lf", &a, &b, &c) == 3) cmd_fanout(a, b, c);
    else if (sscanf(l, "burst %lf %lf %lf %lf", &a, &b, &c, &d) == 4) cmd_burst((int)a, b, c, d);
    else if (sscanf(l, "acked %lf %lf", &a, &b) == 2) cmd_acked((int)a, b);
    else if (strncmp(l, "quit", 4) == 0) {
        printf("{\"event\":\"bye\"}\n");
        fflush(stdout);
        exit(0);
    } else if (l[0]) die("unknown command: %s", l);
}

static void process_lines(void) {
    while (mode == M_IDLE) {
        char *nl = memchr(line, '\n', linelen);
        if (!nl) return;
        *nl = 0;
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s", line);
        size_t used = (size_t)(nl - line) + 1;
        memmove(line, line + used, linelen - used);
        linelen -= used;
        handle_command(cmd);
    }
}

static void on_stdin(void) {
    ssize_t r = read(0, line + linelen, sizeof line - 1 - linelen);
    if (r <= 0) exit(0); /* parent gone */
    linelen += (size_t)r;
    if (linelen >= sizeof line - 1) die("command line too long");
}


static struct epoll_event evs[1024];
static int ep_bulk_used;

static int poll_once(int epfd, int timeout) {
    int n = epoll_wait(epfd, evs, 1024, timeout);
    uint64_t now = now_ns();
    for (int i = 0; i < n; i++) {
        uint32_t id = evs[i].data.u32;
        if (id == ID_STDIN) {
            on_stdin();
            continue;
        }
        if (id == ID_TIMER) {
            uint64_t x;
            if (read(timerfd, &x, sizeof x) > 0 && mode == M_FANOUT) fanout_tick(now);
            continue;
        }
        conn *c = &conns[id];
        if (c->state == ST_CLOSED) continue;
        if (c->state == ST_CONNECTING) {
            if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c, (int)id);
            continue;
        }
        if (evs[i].events & EPOLLOUT) conn_flush(c, (int)id);
        if (c->state != ST_CLOSED && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
            on_readable(c, (int)id, now);
    }
    return n;
}

static void move_bulk(void) {
    for (int i = 0; i < opt.subs; i++) {
        conn *c = &conns[i];
        if (c->state == ST_CLOSED || c->probe) continue;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0), .data.u32 = (uint32_t)i};
        epoll_ctl(ep_bulk, EPOLL_CTL_ADD, c->fd, &ev);
        c->epfd = ep_bulk;
        ep_bulk_used = 1;
    }
}

static int pubs_inflight(void) {
    int inflight = 0;
    for (int i = 0; i < conc; i++) inflight += conns[opt.subs + i].inflight;
    return inflight;
}

static void run_mode(uint64_t now, uint64_t born) {
    switch (mode) {
    case M_SETUP:
        if (nready == nconns) {
            printf("{\"event\":\"ready\",\"connections\":%d,\"subscribers\":%d,\"publishers\":%d,"
                   "\"setup_seconds\":%.3f}\n",
                   nconns, opt.subs, opt.pubs, (double)(now - setup_start) / 1e9);
            fflush(stdout);
            mode = M_IDLE;
            if (opt.bulk_interval_ms > 0) move_bulk();
        } else if ((double)(now - setup_start) / 1e9 > opt.setup_timeout)
            die("setup timed out: %d of %d connections ready", nready, nconns);
        break;
    case M_FANOUT:
        if (now >= window_end_ns) {
            fanout_tick(window_end_ns - 1);
            if (sent < nmsg) fanout_tick(now); /* finish the schedule if we are late */
            set_timer(0);
            mode = M_DRAIN;
            printf("{\"event\":\"window_end\",\"published\":%llu}\n", (unsigned long long)sent);
            fflush(stdout);
        }
        break;
    case M_DRAIN:
        if (delivered >= sent * (uint64_t)opt.subs || now >= mode_deadline) fanout_report(now);
        break;
    case M_ACKED:
        if (now >= mode_deadline) {
            mode = M_ACKED_DRAIN;
            mode_deadline = now;
        }
        break;
    case M_BURST:
        if (now >= window_end_ns || (acked_seq >= nmsg && !pubs_inflight())) {
            if (now < window_end_ns) window_end_ns = now; /* every message sent and acked */
            mode = M_BURST_DRAIN;
            printf("{\"event\":\"window_end\",\"published\":%llu}\n", (unsigned long long)sent);
            fflush(stdout);
        }
        break;
    case M_BURST_DRAIN:
        if ((!pubs_inflight() && delivered >= sent * (uint64_t)opt.subs) || now >= mode_deadline)
            burst_report(now);
        break;
    case M_ACKED_DRAIN: {
        int inflight = 0;
        for (int i = 0; i < conc; i++) inflight += conns[opt.subs + i].inflight;
        if (!inflight || now > mode_deadline + 10000000000ull) acked_report(now);
        break;
    }
    default:
        break;
    }
    if (mode == M_IDLE) process_lines();
    if ((double)(now - born) / 1e9 > opt.max_lifetime) die("max lifetime reached");
}

static void usage(void) {
    fprintf(stderr,
            "usage: wsload [--host H] [--port P] [--proto env|sio] [--path PATH] [--token T]\n"
            "              [--topic T] [--subs N] [--pubs K] [--payload BYTES] [--src-addrs K]\n"
            "              [--connect-batch B] [--probes N] [--bulk-interval-ms MS]\n"
            "              [--setup-timeout S] [--max-lifetime S]\n");
    exit(64);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) opt.host = v;
        else if (!strcmp(a, "--port")) opt.port = atoi(v);
        else if (!strcmp(a, "--proto")) opt.proto = !strcmp(v, "sio") ? PROTO_SIO : PROTO_ENV;
        else if (!strcmp(a, "--path")) opt.path = v;
        else if (!strcmp(a, "--token")) opt.token = v[0] ? v : NULL;
        else if (!strcmp(a, "--topic")) opt.topic = v;
        else if (!strcmp(a, "--subs")) opt.subs = atoi(v);
        else if (!strcmp(a, "--pubs")) opt.pubs = atoi(v);
        else if (!strcmp(a, "--payload")) opt.payload = atoi(v);
        else if (!strcmp(a, "--src-addrs")) opt.src_addrs = atoi(v);
        else if (!strcmp(a, "--connect-batch")) opt.connect_batch = atoi(v);
        else if (!strcmp(a, "--probes")) opt.probes = atoi(v);
        else if (!strcmp(a, "--bulk-interval-ms")) opt.bulk_interval_ms = atoi(v);
        else if (!strcmp(a, "--setup-timeout")) opt.setup_timeout = atof(v);
        else if (!strcmp(a, "--max-lifetime")) opt.max_lifetime = atof(v);
        else usage();
    }
    if (!opt.path) opt.path = opt.proto == PROTO_ENV ? "/api/pubsub" : "/socket.io/?EIO=4&transport=websocket";
    if (opt.payload < 0 || opt.payload > 65536) die("--payload must be 0..65536");
    if (opt.subs < 0 || opt.pubs < 0 || opt.subs + opt.pubs < 1) die("need connections");
    if (opt.src_addrs < 1) opt.src_addrs = 1;
    memset(pad, 'x', (size_t)opt.payload);
    pad[opt.payload] = 0;
    rng_state ^= now_ns() ^ ((uint64_t)getpid() << 32);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)(opt.subs + opt.pubs + 16) > rl.rlim_cur)
        die("need %d file descriptors, limit is %llu", opt.subs + opt.pubs + 16, (unsigned long long)rl.rlim_cur);

    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &dst.sin_addr) != 1) die("--host must be an IPv4 address");

    nconns = opt.subs + opt.pubs;
    conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) conns[i].role = i < opt.subs ? ROLE_SUB : ROLE_PUB, conns[i].fd = -1;
    /* Probes (read as soon as a frame arrives, and timed) are spread evenly over the
     * subscription order, so that their latency is not that of the first subscribers served. */
    if (opt.probes <= 0 || opt.probes >= opt.subs) {
        for (int i = 0; i < opt.subs; i++) conns[i].probe = 1;
    } else {
        int stride = opt.subs / opt.probes;
        for (int k = 0; k < opt.probes; k++) conns[k * stride + stride - 1].probe = 1;
    }

    ep = epoll_create1(EPOLL_CLOEXEC);
    timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = ID_STDIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    ev.data.u32 = ID_TIMER;
    epoll_ctl(ep, EPOLL_CTL_ADD, timerfd, &ev);

    ep_bulk = epoll_create1(EPOLL_CLOEXEC);
    uint64_t born = now_ns();
    setup_start = born;
    uint64_t next_bulk = 0, bulk_ns = (uint64_t)opt.bulk_interval_ms * 1000000ull;
    for (;;) {
        if (mode == M_SETUP)
            while (started < nconns && started - nready < opt.connect_batch) start_connect(started);
        uint64_t now = now_ns();
        int timeout = 10;
        if (mode != M_SETUP && ep_bulk_used) {
            if (now >= next_bulk) {
                /* Bulk subscribers: read everything they have queued, then leave them alone
                 * for --bulk-interval-ms so that one recv() returns several frames. */
                for (int rounds = 0; rounds < nconns / 1024 + 2; rounds++)
                    if (poll_once(ep_bulk, 0) < 1024) break;
                next_bulk = now + bulk_ns;
            }
            uint64_t left = next_bulk > now ? (next_bulk - now + 999999) / 1000000 : 0;
            if (left < (uint64_t)timeout) timeout = (int)left;
        }
        poll_once(ep, timeout);
        now = now_ns();
        run_mode(now, born);
    }
}
