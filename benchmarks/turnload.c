/*
 * turnload: a TURN (RFC 8656 / 5766) load generator for loopback benchmarks.
 *
 *   turnload relay -t IP:PORT -u USER -k KEYHEX [-n ALLOCS] [-P PEER_IP] [-z BYTES] [-w WINDOW]
 *                  [-d SEC] [-W SEC] [-T MS] [-S SOURCES]
 *   turnload alloc -t IP:PORT -u USER -k KEYHEX [-c CONCURRENT] [-d SEC] [-W SEC] [-T MS] [-S SOURCES]
 *   turnload hold  -t IP:PORT -u USER -k KEYHEX -n N1[,N2...] [-c CONCURRENT] [-d SEC] [-T MS] [-S SOURCES]
 *
 * Every client does what a real one does (a browser's or aioice's TURN client): an Allocate
 * without credentials, the 401 with REALM and NONCE, the Allocate again with USERNAME, REALM,
 * NONCE and MESSAGE-INTEGRITY (HMAC-SHA1 with KEYHEX = MD5(user:realm:password), which the
 * caller computes), 438 answered with the fresh nonce. Each client has its own UDP socket
 * (its own 5-tuple), bound to one of SOURCES loopback addresses 127.1.0.1, 127.1.0.2, ...
 * round robin, the way clients of a public server come from many addresses.
 *
 * relay: ALLOCS allocations, each with a ChannelBind (0x4000) to its own peer socket on
 *        PEER_IP; then a closed loop: WINDOW ChannelData messages of BYTES payload
 *        outstanding per allocation, client -> server -> relay -> peer; each one the peer
 *        receives re-arms its slot. A message not delivered within -T ms is counted lost
 *        and re-sent. Reports delivered messages/s and payload Mbit/s.
 * alloc: CONCURRENT clients, each cycling: fresh socket, Allocate (401, then authenticated),
 *        Refresh with LIFETIME 0 (deletes it), close. Reports allocations/s and the
 *        handshake latency (first Allocate sent to the success response).
 * hold:  allocates until N1 allocations are held (never deleted), prints one JSON line,
 *        waits for a line on stdin, goes on to N2, ... After the last count it waits for a
 *        line (or EOF) on stdin and exits. The caller reads the server's RSS in between.
 *
 * A request unanswered after -T ms is re-sent (same bytes, as RFC 8489 retransmission);
 * after 7 tries the client gives up (counted as a failure) and starts over. Only
 * 127.0.0.0/8 addresses are accepted; every mode stops by itself (-d bounds it).
 */
#include "loadcommon.h"

#define BATCH 64
#define MAX_MSG 2048
#define MAX_CLIENTS 1024
#define MAX_TRIES 7
#define LAT_BUCKET_NS 10000ull /* 10 us latency buckets */
#define LAT_BUCKETS 100000     /* up to 1 s */

/* ---------------------------------------------------------------- SHA-1 / HMAC-SHA1 */

struct sha1 {
    uint32_t h[5];
    uint64_t len;
    uint8_t buf[64];
    size_t fill;
};

static uint32_t rol32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static void sha1_block(struct sha1 *s, const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) w[i] = get32(p + 4 * i);
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999u; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1u; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6u; }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol32(b, 30); b = a; a = t;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d; s->h[4] += e;
}

static void sha1_init(struct sha1 *s) {
    static const uint32_t h0[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    memcpy(s->h, h0, sizeof h0);
    s->len = 0;
    s->fill = 0;
}

static void sha1_update(struct sha1 *s, const uint8_t *p, size_t n) {
    s->len += n;
    while (n) {
        size_t take = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->buf + s->fill, p, take);
        s->fill += take; p += take; n -= take;
        if (s->fill == 64) { sha1_block(s, s->buf); s->fill = 0; }
    }
}

static void sha1_final(struct sha1 *s, uint8_t out[20]) {
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80, zero = 0, lenbuf[8];
    sha1_update(s, &pad, 1);
    while (s->fill != 56) sha1_update(s, &zero, 1);
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(s, lenbuf, 8);
    for (int i = 0; i < 5; i++) put32(out + 4 * i, s->h[i]);
}

/* HMAC-SHA1 with a key of at most 64 bytes (STUN long-term keys are 16). */
static void hmac_sha1(const uint8_t *key, size_t klen, const uint8_t *msg, size_t n, uint8_t out[20]) {
    uint8_t ipad[64], opad[64], inner[20];
    memset(ipad, 0x36, 64);
    memset(opad, 0x5c, 64);
    for (size_t i = 0; i < klen && i < 64; i++) { ipad[i] ^= key[i]; opad[i] ^= key[i]; }
    struct sha1 s;
    sha1_init(&s); sha1_update(&s, ipad, 64); sha1_update(&s, msg, n); sha1_final(&s, inner);
    sha1_init(&s); sha1_update(&s, opad, 64); sha1_update(&s, inner, 20); sha1_final(&s, out);
}

/* ---------------------------------------------------------------- options */

struct opts {
    const char *mode;
    struct sockaddr_in server, peer_ip;
    const char *user;
    uint8_t key[16];
    double duration, warmup;
    int allocs, window, size, timeout_ms, concurrent, sources;
    int holds[16], nholds;
} o;

static void usage(void) {
    fprintf(stderr,
            "usage: turnload relay -t IP:PORT -u USER -k KEYHEX [-n ALLOCS] [-P PEER_IP] [-z BYTES]\n"
            "                      [-w WINDOW] [-d SEC] [-W SEC] [-T MS] [-S SOURCES]\n"
            "       turnload alloc -t IP:PORT -u USER -k KEYHEX [-c CONCURRENT] [-d SEC] [-W SEC]\n"
            "                      [-T MS] [-S SOURCES]\n"
            "       turnload hold  -t IP:PORT -u USER -k KEYHEX -n N1[,N2...] [-c CONCURRENT]\n"
            "                      [-d SEC] [-T MS] [-S SOURCES]\n");
    exit(2);
}

static int parse_key(const char *hex, uint8_t out[16]) {
    if (strlen(hex) != 32) return -1;
    for (int i = 0; i < 16; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* ---------------------------------------------------------------- STUN messages */

enum { ALLOCATE = 0x0003, REFRESH = 0x0004, CHANNEL_BIND = 0x0009 };
enum {
    A_USERNAME = 0x0006, A_MI = 0x0008, A_ERROR = 0x0009, A_CHANNEL = 0x000C, A_LIFETIME = 0x000D,
    A_PEER = 0x0012, A_REALM = 0x0014, A_NONCE = 0x0015, A_RELAYED = 0x0016, A_TRANSPORT = 0x0019,
};

static size_t attr(uint8_t *m, size_t n, uint16_t type, const void *val, size_t len) {
    put16(m + n, type);
    put16(m + n + 2, (uint16_t)len);
    memcpy(m + n + 4, val, len);
    size_t padded = (len + 3) & ~(size_t)3;
    memset(m + n + 4 + len, 0, padded - len);
    return n + 4 + padded;
}

static const uint8_t *find_attr(const uint8_t *m, size_t n, uint16_t type, size_t *len) {
    size_t off = 20;
    for (int guard = 0; off + 4 <= n && guard < 64; guard++) {
        uint16_t t = get16(m + off), l = get16(m + off + 2);
        if (off + 4 + l > n) return NULL;
        if (t == type) { *len = l; return m + off + 4; }
        off += 4 + (size_t)((l + 3) & ~3);
    }
    return NULL;
}

static void xor_address(uint8_t v[8], const struct sockaddr_in *a) {
    v[0] = 0; v[1] = 1;
    put16(v + 2, ntohs(a->sin_port) ^ (uint16_t)(MAGIC >> 16));
    put32(v + 4, ntohl(a->sin_addr.s_addr) ^ MAGIC);
}

/* ---------------------------------------------------------------- clients */

enum step { S_ALLOC, S_ALLOC_AUTH, S_CHANBIND, S_REFRESH0, S_DONE };
enum event { EV_NONE, EV_ALLOCATED, EV_DONE, EV_FAILED };

struct client {
    int fd, step, tries, chanbind, remove;
    uint8_t txid[12];
    uint8_t req[512];
    size_t req_len;
    uint64_t t_send, t_begin;
    uint8_t nonce[256], realm[256];
    size_t nonce_len, realm_len;
    struct sockaddr_in local, relay, peer;
};

static uint64_t st_allocated, st_allocated_measured, st_deleted, st_failed, st_retransmits,
    st_challenges, st_stale, st_errors, st_invalid, st_send_err;
static uint32_t *lat_hist;
static uint64_t lat_n, lat_over;
static double lat_sum_us;
static uint32_t next_source;

static int open_client(struct client *c) {
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { perror("socket"); return -1; }
    uint32_t i = next_source++ % (uint32_t)o.sources;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7F010001u + i); /* 127.1.0.1 + i */
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        connect(c->fd, (struct sockaddr *)&o.server, sizeof o.server) < 0) {
        perror("bind/connect");
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    socklen_t len = sizeof c->local;
    getsockname(c->fd, (struct sockaddr *)&c->local, &len);
    return 0;
}

static void build(struct client *c) {
    uint8_t *m = c->req;
    uint64_t r1 = rnd(), r2 = rnd();
    memcpy(c->txid, &r1, 8);
    memcpy(c->txid + 8, &r2, 4);
    uint16_t type = c->step == S_CHANBIND ? CHANNEL_BIND : c->step == S_REFRESH0 ? REFRESH : ALLOCATE;
    put16(m, type);
    put32(m + 4, MAGIC);
    memcpy(m + 8, c->txid, 12);
    size_t n = 20;
    uint8_t v[8];
    if (c->step == S_ALLOC || c->step == S_ALLOC_AUTH) {
        put32(v, 17u << 24);
        n = attr(m, n, A_TRANSPORT, v, 4);
    } else if (c->step == S_CHANBIND) {
        put32(v, 0x4000u << 16);
        n = attr(m, n, A_CHANNEL, v, 4);
        xor_address(v, &c->peer);
        n = attr(m, n, A_PEER, v, 8);
    } else {
        put32(v, 0);
        n = attr(m, n, A_LIFETIME, v, 4);
    }
    if (c->step != S_ALLOC) {
        n = attr(m, n, A_USERNAME, o.user, strlen(o.user));
        n = attr(m, n, A_REALM, c->realm, c->realm_len);
        n = attr(m, n, A_NONCE, c->nonce, c->nonce_len);
        put16(m + 2, (uint16_t)(n - 20 + 24));
        uint8_t mac[20];
        hmac_sha1(o.key, 16, m, n, mac);
        n = attr(m, n, A_MI, mac, 20);
    }
    put16(m + 2, (uint16_t)(n - 20));
    c->req_len = n;
}

static void transmit(struct client *c, uint64_t t) {
    if (send(c->fd, c->req, c->req_len, 0) < 0) st_send_err++;
    c->t_send = t;
}

static void begin(struct client *c, int step, uint64_t t) {
    c->step = step;
    c->tries = 1;
    build(c);
    transmit(c, t);
}

static int error_code(const uint8_t *m, size_t n) {
    size_t l;
    const uint8_t *v = find_attr(m, n, A_ERROR, &l);
    if (!v || l < 4) return 0;
    return (v[2] & 7) * 100 + v[3];
}

static int copy_attr(const uint8_t *m, size_t n, uint16_t type, uint8_t *dst, size_t *dlen) {
    size_t l;
    const uint8_t *v = find_attr(m, n, type, &l);
    if (!v || l > 255) return -1;
    memcpy(dst, v, l);
    *dlen = l;
    return 0;
}

static void lat_add(uint64_t ns) {
    lat_n++;
    lat_sum_us += (double)ns / 1000.0;
    uint64_t b = ns / LAT_BUCKET_NS;
    if (b >= LAT_BUCKETS) lat_over++;
    else lat_hist[b]++;
}

static double lat_pct(double q) {
    if (!lat_n) return -1.0;
    uint64_t want = (uint64_t)(q * (double)lat_n), seen = 0;
    for (uint64_t b = 0; b < LAT_BUCKETS; b++) {
        seen += lat_hist[b];
        if (seen > want) return (double)(b * LAT_BUCKET_NS + LAT_BUCKET_NS / 2) / 1000.0;
    }
    return (double)(LAT_BUCKETS * LAT_BUCKET_NS) / 1000.0;
}

/* One datagram from the server to client c. */
static int on_response(struct client *c, const uint8_t *m, size_t n, uint64_t t, int measuring) {
    if (n < 20 || (n & 3) || get32(m + 4) != MAGIC || (size_t)get16(m + 2) + 20 != n ||
        memcmp(m + 8, c->txid, 12) != 0) {
        st_invalid++;
        return EV_NONE;
    }
    uint16_t type = get16(m);
    int success = (type & 0x0110) == 0x0100, error = (type & 0x0110) == 0x0110;
    if (!success && !error) { st_invalid++; return EV_NONE; }
    if (error) {
        int code = error_code(m, n);
        if ((code == 401 && c->step == S_ALLOC) || code == 438) {
            if (code == 401) st_challenges++;
            else st_stale++;
            if (copy_attr(m, n, A_NONCE, c->nonce, &c->nonce_len) < 0 ||
                (copy_attr(m, n, A_REALM, c->realm, &c->realm_len) < 0 && c->realm_len == 0)) {
                st_errors++;
                return EV_FAILED;
            }
            begin(c, c->step == S_ALLOC ? S_ALLOC_AUTH : c->step, t);
            return EV_NONE;
        }
        st_errors++;
        return EV_FAILED;
    }
    if (c->step == S_ALLOC || c->step == S_ALLOC_AUTH) {
        size_t l;
        const uint8_t *v = find_attr(m, n, A_RELAYED, &l);
        if (!v || l != 8 || v[1] != 1) { st_invalid++; return EV_FAILED; }
        c->relay.sin_family = AF_INET;
        c->relay.sin_port = htons(get16(v + 2) ^ (uint16_t)(MAGIC >> 16));
        c->relay.sin_addr.s_addr = htonl(get32(v + 4) ^ MAGIC);
        st_allocated++;
        if (measuring) {
            st_allocated_measured++;
            lat_add(t - c->t_begin);
        }
        if (c->chanbind) begin(c, S_CHANBIND, t);
        else if (c->remove) begin(c, S_REFRESH0, t);
        else c->step = S_DONE;
        return c->step == S_DONE ? EV_DONE : EV_ALLOCATED;
    }
    if (c->step == S_REFRESH0) st_deleted++;
    c->step = S_DONE;
    return EV_DONE;
}

static int on_timer(struct client *c, uint64_t t) {
    if (c->step == S_DONE || t - c->t_send < (uint64_t)o.timeout_ms * 1000000ull) return EV_NONE;
    if (c->tries >= MAX_TRIES) { st_failed++; return EV_FAILED; }
    c->tries++;
    st_retransmits++;
    transmit(c, t);
    return EV_NONE;
}

static void start_client(struct client *c, uint64_t t) {
    c->t_begin = t;
    begin(c, S_ALLOC, t);
}

/* Runs the handshakes of clients[0..n) until every one is done; -1 when one fails or the
 * deadline passes. */
static int drive(struct client *cl, int n, uint64_t deadline) {
    struct pollfd pfd[MAX_CLIENTS];
    uint8_t buf[MAX_MSG];
    for (;;) {
        int pending = 0;
        for (int i = 0; i < n; i++) {
            pfd[i].fd = cl[i].step == S_DONE ? -1 : cl[i].fd;
            pfd[i].events = POLLIN;
            pending += cl[i].step != S_DONE;
        }
        if (!pending) return 0;
        uint64_t t = now_ns();
        if (t >= deadline || stop_flag) return -1;
        poll(pfd, (nfds_t)n, 5);
        t = now_ns();
        for (int i = 0; i < n; i++) {
            struct client *c = &cl[i];
            if (c->step == S_DONE) continue;
            int ev = EV_NONE;
            if (pfd[i].revents & (POLLIN | POLLERR)) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r > 0) ev = on_response(c, buf, (size_t)r, t, 0);
            }
            if (ev == EV_NONE) ev = on_timer(c, t);
            if (ev == EV_FAILED) return -1;
        }
    }
}

/* ---------------------------------------------------------------- relay mode */

struct rslot {
    uint64_t t_send;
    uint32_t gen;
    uint8_t live, measured;
};

static int run_relay(void) {
    int n = o.allocs, w = o.window;
    size_t dlen = 4 + (size_t)o.size;
    struct client *cl = calloc((size_t)n, sizeof *cl);
    int *peer_fd = calloc((size_t)n, sizeof *peer_fd);
    struct rslot *slots = calloc((size_t)(n * w), sizeof *slots);
    uint8_t *pkt = calloc((size_t)(n * w), dlen);
    if (!cl || !peer_fd || !slots || !pkt) { perror("calloc"); return 1; }
    uint64_t t0 = now_ns();
    for (int i = 0; i < n; i++) {
        peer_fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in pa = o.peer_ip;
        pa.sin_port = 0;
        int sz = 4 << 20;
        setsockopt(peer_fd[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        if (bind(peer_fd[i], (struct sockaddr *)&pa, sizeof pa) < 0) { perror("bind peer"); return 1; }
        if (open_client(&cl[i]) < 0) return 1;
        setsockopt(cl[i].fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        socklen_t len = sizeof cl[i].peer;
        getsockname(peer_fd[i], (struct sockaddr *)&cl[i].peer, &len);
        cl[i].chanbind = 1;
        start_client(&cl[i], t0);
    }
    if (drive(cl, n, t0 + 10000000000ull) < 0) {
        fprintf(stderr, "turnload: relay set-up failed (errors %llu, failed %llu)\n",
                (unsigned long long)st_errors, (unsigned long long)st_failed);
        return 1;
    }
    double setup_s = (double)(now_ns() - t0) / 1e9;
    uint32_t key = (uint32_t)rnd();
    for (int s = 0; s < n * w; s++) {
        uint8_t *p = pkt + (size_t)s * dlen;
        put16(p, 0x4000);
        put16(p + 2, (uint16_t)o.size);
        put32(p + 4, (uint32_t)s ^ key);
    }

    static struct mmsghdr smsg[BATCH], rmsg[BATCH];
    static struct iovec siov[BATCH], riov[BATCH];
    static uint8_t rbuf[BATCH][MAX_MSG];
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = rbuf[i];
        riov[i].iov_len = MAX_MSG;
        rmsg[i].msg_hdr.msg_iov = &riov[i];
        rmsg[i].msg_hdr.msg_iovlen = 1;
        smsg[i].msg_hdr.msg_iov = &siov[i];
        smsg[i].msg_hdr.msg_iovlen = 1;
    }
    uint64_t sent = 0, sent_measured = 0, delivered = 0, delivered_measured = 0, in_window = 0,
             lost = 0, stale = 0, bad = 0, send_err = 0;
    int qn = 0, qalloc = -1, qslot[BATCH];

    uint64_t t_start = now_ns();
    uint64_t t_measure0 = t_start + (uint64_t)(o.warmup * 1e9);
    uint64_t t_end = t_measure0 + (uint64_t)(o.duration * 1e9);

    /* Sends the queued slots of allocation qalloc in one sendmmsg. */
#define FLUSH(T, MEAS)                                                                   \
    do {                                                                                 \
        int done_ = 0;                                                                   \
        while (done_ < qn) {                                                             \
            int r_ = sendmmsg(cl[qalloc].fd, smsg + done_, (unsigned)(qn - done_), 0);   \
            if (r_ <= 0) { send_err += (uint64_t)(qn - done_); break; }                  \
            done_ += r_;                                                                 \
        }                                                                                \
        for (int k_ = 0; k_ < qn; k_++) {                                                \
            struct rslot *sl_ = &slots[qslot[k_]];                                       \
            sl_->t_send = (T); sl_->live = 1; sl_->measured = (uint8_t)(MEAS);           \
        }                                                                                \
        sent += (uint64_t)qn;                                                            \
        if (MEAS) sent_measured += (uint64_t)qn;                                         \
        qn = 0;                                                                          \
    } while (0)
#define QUEUE(S, T, MEAS)                                                                \
    do {                                                                                 \
        int a_ = (S) / w;                                                                \
        if (qn && (a_ != qalloc || qn == BATCH)) FLUSH(T, MEAS);                         \
        qalloc = a_;                                                                     \
        struct rslot *sl_ = &slots[S];                                                   \
        sl_->gen++;                                                                      \
        uint8_t *p_ = pkt + (size_t)(S) * dlen;                                          \
        put32(p_ + 8, sl_->gen);                                                         \
        siov[qn].iov_base = p_;                                                          \
        siov[qn].iov_len = dlen;                                                         \
        qslot[qn++] = (S);                                                               \
    } while (0)

    for (int s = 0; s < n * w; s++) QUEUE(s, t_start, 0);
    if (qn) FLUSH(t_start, 0);

    struct pollfd *pfd = calloc((size_t)n, sizeof *pfd);
    for (int i = 0; i < n; i++) { pfd[i].fd = peer_fd[i]; pfd[i].events = POLLIN; }
    uint64_t next_scan = t_start + 10000000ull, timeout_ns = (uint64_t)o.timeout_ms * 1000000ull;
    while (!stop_flag) {
        uint64_t t = now_ns();
        if (t >= t_end + 200000000ull) break;
        poll(pfd, (nfds_t)n, 0); /* busy-poll, see run_churn */
        t = now_ns();
        int measuring = t >= t_measure0 && t < t_end;
        for (int i = 0; i < n; i++) {
            if (!(pfd[i].revents & POLLIN)) continue;
            for (int round = 0; round < 4; round++) {
                int r = recvmmsg(peer_fd[i], rmsg, BATCH, MSG_DONTWAIT, NULL);
                if (r <= 0) break;
                for (int k = 0; k < r; k++) {
                    const uint8_t *p = rbuf[k];
                    if (rmsg[k].msg_len != (unsigned)o.size) { bad++; continue; }
                    uint32_t s = get32(p) ^ key;
                    if (s >= (uint32_t)(n * w) || (int)(s / (uint32_t)w) != i) { bad++; continue; }
                    struct rslot *sl = &slots[s];
                    if (!sl->live || get32(p + 4) != sl->gen) { stale++; continue; }
                    sl->live = 0;
                    delivered++;
                    if (measuring) in_window++;
                    if (sl->measured && t < t_end + 200000000ull) delivered_measured++;
                    if (t < t_end) QUEUE((int)s, t, measuring);
                }
                if (qn) FLUSH(t, measuring);
                if (r < BATCH) break;
            }
        }
        if (t >= next_scan) {
            next_scan = t + 10000000ull;
            for (int s = 0; s < n * w; s++)
                if (slots[s].live && t - slots[s].t_send > timeout_ns) {
                    slots[s].live = 0;
                    lost++;
                    if (t < t_end) QUEUE(s, t, measuring);
                }
            if (qn) FLUSH(t, measuring);
        }
    }
    double measured_s = o.duration;
    double cpu = cpu_seconds();
    printf("{\"mode\": \"relay\", \"allocations\": %d, \"payload_bytes\": %d, \"window\": %d, "
           "\"duration_s\": %.3f, \"setup_s\": %.3f, \"sent\": %llu, \"sent_measured\": %llu, "
           "\"delivered\": %llu, \"delivered_measured\": %llu, \"in_window\": %llu, "
           "\"lost\": %llu, \"stale\": %llu, \"bad\": %llu, \"send_errors\": %llu, "
           "\"packets_per_s\": %.1f, \"payload_mbit_s\": %.1f, \"loss_fraction\": %.6f, "
           "\"cpu_s\": %.3f}\n",
           n, o.size, w, measured_s, setup_s, (unsigned long long)sent,
           (unsigned long long)sent_measured, (unsigned long long)delivered,
           (unsigned long long)delivered_measured, (unsigned long long)in_window,
           (unsigned long long)lost, (unsigned long long)stale, (unsigned long long)bad,
           (unsigned long long)send_err, (double)in_window / measured_s,
           (double)in_window * o.size * 8 / measured_s / 1e6,
           sent_measured ? 1.0 - (double)delivered_measured / (double)sent_measured : 0.0, cpu);
    fflush(stdout);
    return 0;
}

/* ---------------------------------------------------------------- alloc and hold modes */

static void print_alloc_report(const char *mode, double measured_s, uint64_t held) {
    double cpu = cpu_seconds();
    printf("{\"mode\": \"%s\", \"concurrent\": %d, \"sources\": %d, \"duration_s\": %.3f, "
           "\"held\": %llu, \"allocated\": %llu, \"allocated_measured\": %llu, \"deleted\": %llu, "
           "\"allocations_per_s\": %.1f, \"challenges\": %llu, \"stale_nonces\": %llu, "
           "\"retransmits\": %llu, \"failed\": %llu, \"error_responses\": %llu, \"invalid\": %llu, "
           "\"send_errors\": %llu, \"handshake_us\": {\"n\": %llu, \"mean\": %.1f, \"p50\": %.1f, "
           "\"p99\": %.1f}, \"cpu_s\": %.3f}\n",
           mode, o.concurrent, o.sources, measured_s, (unsigned long long)held,
           (unsigned long long)st_allocated, (unsigned long long)st_allocated_measured,
           (unsigned long long)st_deleted,
           measured_s > 0 ? (double)st_allocated_measured / measured_s : 0.0,
           (unsigned long long)st_challenges, (unsigned long long)st_stale,
           (unsigned long long)st_retransmits, (unsigned long long)st_failed,
           (unsigned long long)st_errors, (unsigned long long)st_invalid,
           (unsigned long long)st_send_err, (unsigned long long)lat_n,
           lat_n ? lat_sum_us / (double)lat_n : -1.0, lat_pct(0.5), lat_pct(0.99), cpu);
    fflush(stdout);
}

/* alloc (hold == 0): cycle allocate/delete for the duration. hold: keep allocations until
 * each count in o.holds is reached. */
static int run_churn(int hold) {
    int c_n = o.concurrent;
    struct client *cl = calloc((size_t)c_n, sizeof *cl);
    int *held_fds = hold ? calloc((size_t)o.holds[o.nholds - 1] + 1, sizeof(int)) : NULL;
    lat_hist = calloc(LAT_BUCKETS, sizeof *lat_hist);
    if (!cl || !lat_hist || (hold && !held_fds)) { perror("calloc"); return 1; }
    uint64_t held = 0, target_total = hold ? (uint64_t)o.holds[o.nholds - 1] : 0;
    int next_hold = 0;
    uint64_t t_start = now_ns();
    uint64_t t_measure0 = t_start + (uint64_t)(o.warmup * 1e9);
    uint64_t t_end = hold ? t_start + (uint64_t)(o.duration * 1e9) : t_measure0 + (uint64_t)(o.duration * 1e9);
    uint64_t launched = 0;
    for (int i = 0; i < c_n; i++) {
        cl[i].fd = -1;
        cl[i].step = S_DONE;
    }
    struct pollfd pfd[MAX_CLIENTS];
    uint8_t buf[MAX_MSG];
    uint64_t t_hold0 = t_start;
    for (;;) {
        uint64_t t = now_ns();
        if (stop_flag || t >= t_end) break;
        int measuring = !hold && t >= t_measure0;
        /* (Re)start idle slots. */
        for (int i = 0; i < c_n; i++) {
            struct client *c = &cl[i];
            if (c->step != S_DONE) continue;
            if (hold && launched >= (uint64_t)o.holds[next_hold]) continue;
            if (open_client(c) < 0) return 1;
            c->remove = !hold;
            start_client(c, t);
            launched++;
        }
        int active = 0;
        for (int i = 0; i < c_n; i++) {
            pfd[i].fd = cl[i].step == S_DONE ? -1 : cl[i].fd;
            pfd[i].events = POLLIN;
            active += cl[i].step != S_DONE;
        }
        if (hold && !active && held >= (uint64_t)o.holds[next_hold]) {
            printf("{\"event\": \"held\", \"held\": %llu, \"seconds\": %.3f, \"failed\": %llu, "
                   "\"error_responses\": %llu, \"retransmits\": %llu}\n",
                   (unsigned long long)held, (double)(now_ns() - t_hold0) / 1e9,
                   (unsigned long long)st_failed, (unsigned long long)st_errors,
                   (unsigned long long)st_retransmits);
            fflush(stdout);
            char line[64];
            if (!fgets(line, sizeof line, stdin) || held >= target_total) break;
            next_hold++;
            t_hold0 = now_ns();
            t_end = t_hold0 + (uint64_t)(o.duration * 1e9); /* -d bounds each step */
            continue;
        }
        poll(pfd, (nfds_t)c_n, 0); /* busy: a sleeping generator costs the server a wake-up IPI per reply */
        t = now_ns();
        measuring = !hold && t >= t_measure0 && t < t_end;
        for (int i = 0; i < c_n; i++) {
            struct client *c = &cl[i];
            if (c->step == S_DONE) continue;
            int ev = EV_NONE;
            if (pfd[i].revents & (POLLIN | POLLERR)) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r > 0) ev = on_response(c, buf, (size_t)r, t, hold || measuring);
            }
            if (ev == EV_NONE) ev = on_timer(c, t);
            if (ev == EV_DONE) {
                if (hold) {
                    held_fds[held++] = c->fd;
                } else {
                    close(c->fd);
                }
                c->fd = -1;
            } else if (ev == EV_FAILED) {
                close(c->fd);
                c->fd = -1;
                c->step = S_DONE;
                if (hold) launched--; /* try that one again */
            }
        }
    }
    if (hold) {
        if (held < target_total) {
            fprintf(stderr, "turnload: held %llu of %llu allocations before the deadline\n",
                    (unsigned long long)held, (unsigned long long)target_total);
            print_alloc_report("hold", (double)(now_ns() - t_start) / 1e9, held);
            return 1;
        }
        print_alloc_report("hold", (double)(now_ns() - t_start) / 1e9, held);
        return 0;
    }
    print_alloc_report("alloc", o.duration, 0);
    return 0;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv) {
    if (argc < 2) usage();
    o.mode = argv[1];
    o.duration = 5.0;
    o.warmup = 0.5;
    o.allocs = 16;
    o.window = 32;
    o.size = 100;
    o.timeout_ms = 200;
    o.concurrent = 64;
    o.sources = 1024;
    o.user = NULL;
    int have_key = 0, have_target = 0;
    if (parse_addr("127.0.0.2:9", &o.peer_ip) < 0) return 2;
    optind = 2;
    int ch;
    while ((ch = getopt(argc, argv, "t:u:k:n:P:z:w:d:W:T:c:S:")) != -1) {
        switch (ch) {
        case 't': if (parse_addr(optarg, &o.server) < 0) usage(); have_target = 1; break;
        case 'u': o.user = optarg; break;
        case 'k': if (parse_key(optarg, o.key) < 0) usage(); have_key = 1; break;
        case 'n': {
            char *s = optarg, *end;
            o.nholds = 0;
            while (*s && o.nholds < 16) {
                long v = strtol(s, &end, 10);
                if (end == s || v < 1 || v > 100000) usage();
                if (o.nholds && v <= o.holds[o.nholds - 1]) usage();
                o.holds[o.nholds++] = (int)v;
                s = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') usage();
            }
            o.allocs = o.holds[0];
            break;
        }
        case 'P': {
            char buf[80];
            snprintf(buf, sizeof buf, "%s:9", optarg);
            if (parse_addr(buf, &o.peer_ip) < 0) usage();
            break;
        }
        case 'z': o.size = atoi(optarg); break;
        case 'w': o.window = atoi(optarg); break;
        case 'd': o.duration = atof(optarg); break;
        case 'W': o.warmup = atof(optarg); break;
        case 'T': o.timeout_ms = atoi(optarg); break;
        case 'c': o.concurrent = atoi(optarg); break;
        case 'S': o.sources = atoi(optarg); break;
        default: usage();
        }
    }
    if (!have_target || !have_key || !o.user || strlen(o.user) > 255) usage();
    if (o.duration <= 0 || o.duration > 600 || o.warmup < 0 || o.warmup > 60 || o.timeout_ms < 1 ||
        o.sources < 1 || o.sources > 65000 || o.concurrent < 1 || o.concurrent > MAX_CLIENTS)
        usage();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    seed();
    if (!strcmp(o.mode, "relay")) {
        if (o.allocs < 1 || o.allocs > MAX_CLIENTS || o.window < 1 || o.window > 4096 ||
            o.size < 12 || o.size > 1400)
            usage();
        return run_relay();
    }
    if (!strcmp(o.mode, "alloc")) return run_churn(0);
    if (!strcmp(o.mode, "hold")) {
        if (!o.nholds) usage();
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
            rl.rlim_cur < (rlim_t)o.holds[o.nholds - 1] + (rlim_t)o.concurrent + 64) {
            fprintf(stderr, "turnload: the open-file limit (%llu) is too low for %d allocations\n",
                    (unsigned long long)rl.rlim_cur, o.holds[o.nholds - 1]);
            return 1;
        }
        return run_churn(1);
    }
    usage();
    return 2;
}
