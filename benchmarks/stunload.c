/*
 * stunload: a STUN Binding load generator (and a trivial C responder) for loopback benchmarks.
 *
 *   stunload sat  -t IP:PORT [-d SEC] [-W SEC] [-s SOCKETS] [-w WINDOW] [-T TIMEOUT_MS] [-f] [-b]
 *   stunload rate -t IP:PORT -r REQ_PER_S [-d SEC] [-W SEC] [-s SOCKETS] [-f]
 *   stunload echo -l IP:PORT [-d SEC]
 *
 * sat:  closed loop. Keeps WINDOW requests outstanding, spread over SOCKETS connected UDP
 *       sockets; every valid response immediately re-arms its slot with a fresh request.
 *       A request unanswered after TIMEOUT_MS is counted lost and re-sent. -b busy-polls.
 * rate: open loop. Sends REQ_PER_S requests on a fixed schedule (round-robin over the
 *       sockets) whatever the responses do, and measures each request's round trip from
 *       its send time (stored per transaction-id slot). Busy-polls so timestamps are tight.
 * echo: answers Binding requests with a minimal success response (XOR-MAPPED-ADDRESS only),
 *       with recvmmsg/sendmmsg; used to show the generator's own headroom.
 *
 * Requests are RFC 5389 Binding requests: 20-byte header, magic cookie 0x2112A442, random
 * 96-bit transaction ids (the first 32 bits carry the slot number XOR a random per-run key;
 * the whole id is compared on receipt), and with -f a FINGERPRINT attribute.
 * A response counts as valid when it is a Binding success response (0x0101) with the magic
 * cookie, a consistent length, the transaction id of an outstanding request and an
 * XOR-MAPPED-ADDRESS equal to the sending socket's own address.
 *
 * Measurement runs for -d seconds after a -W seconds warm-up; then the program drains
 * in-flight responses for a short while and prints one JSON object on stdout. Every mode
 * stops by itself. Only 127.0.0.0/8 targets are accepted.
 */
#include "loadcommon.h"

#define BATCH 64
#define MAX_SOCKETS 64
#define MAX_MSG 1500
#define HIST_US 100000 /* 1 us buckets up to 100 ms */
#define RATE_SLOTS (1u << 18)
#define DRAIN_NS 200000000ull

/* ---- options ---- */
struct opts {
    const char *mode;
    struct sockaddr_in addr;
    double duration, warmup, rate;
    int sockets, window, timeout_ms, fingerprint, busy;
};

static void usage(void) {
    fprintf(stderr,
            "usage: stunload sat  -t IP:PORT [-d SEC] [-W SEC] [-s SOCKETS] [-w WINDOW] [-T MS] [-f] [-b]\n"
            "       stunload rate -t IP:PORT -r REQ_PER_S [-d SEC] [-W SEC] [-s SOCKETS] [-f]\n"
            "       stunload echo -l IP:PORT [-d SEC]\n");
    exit(2);
}

/* ---- latency histogram ---- */
static uint32_t *hist;
static uint64_t hist_over, hist_n;
static double lat_sum_us, lat_max_us;

static void hist_add(uint64_t ns) {
    double us = (double)ns / 1000.0;
    uint64_t b = ns / 1000;
    if (b < HIST_US) hist[b]++; else hist_over++;
    hist_n++;
    lat_sum_us += us;
    if (us > lat_max_us) lat_max_us = us;
}
static double hist_pct(double q) {
    if (!hist_n) return -1;
    uint64_t want = (uint64_t)(q * (double)hist_n), acc = 0;
    if (want >= hist_n) want = hist_n - 1;
    for (uint64_t b = 0; b < HIST_US; b++) {
        acc += hist[b];
        if (acc > want) return (double)b + 0.5;
    }
    return lat_max_us;
}

/* ---- generator state ---- */
struct slot {
    uint8_t txid[12];
    uint8_t live;     /* request outstanding */
    uint8_t measured; /* sent inside the measurement window */
    uint16_t sock;
    uint64_t t_send;
};

static struct opts o;
static int fds[MAX_SOCKETS];
static struct sockaddr_in locals[MAX_SOCKETS];
static struct slot *slots;
static uint32_t nslots, key;
static size_t req_len;

static uint64_t st_sent, st_sent_measured, st_valid, st_valid_measured, st_in_window, st_invalid,
    st_stale,
    st_lost, st_send_err, st_recv_err, st_late_sends;
static uint64_t max_lag_ns;

static void build_request(uint8_t *buf, uint32_t s) {
    struct slot *sl = &slots[s];
    uint32_t head = s ^ key;
    uint64_t r = rnd();
    memcpy(sl->txid, &head, 4);
    memcpy(sl->txid + 4, &r, 8);
    put16(buf, 0x0001);
    put16(buf + 2, o.fingerprint ? 8 : 0);
    put32(buf + 4, MAGIC);
    memcpy(buf + 8, sl->txid, 12);
    if (o.fingerprint) {
        put16(buf + 20, 0x8028);
        put16(buf + 22, 4);
        put32(buf + 24, crc32(buf, 20) ^ 0x5354554Eu);
    }
}

/* Returns the slot number of a valid response, or -1 (and counts why). */
static long check_response(const uint8_t *p, size_t n, int si) {
    if (n < 20 || get32(p + 4) != MAGIC || get16(p) != 0x0101 || (size_t)get16(p + 2) + 20 != n ||
        (n & 3)) {
        st_invalid++;
        return -1;
    }
    uint32_t head;
    memcpy(&head, p + 8, 4);
    uint32_t s = head ^ key;
    if (s >= nslots || !slots[s].live || memcmp(slots[s].txid, p + 8, 12) != 0) {
        st_stale++;
        return -1;
    }
    /* XOR-MAPPED-ADDRESS must be this socket's own address. */
    size_t off = 20;
    int mapped_ok = 0;
    for (int guard = 0; off + 4 <= n && guard < 32; guard++) {
        uint16_t t = get16(p + off), l = get16(p + off + 2);
        if (off + 4 + l > n) break;
        if (t == 0x0020 && l == 8 && p[off + 5] == 0x01) {
            uint16_t port = get16(p + off + 6) ^ (uint16_t)(MAGIC >> 16);
            uint32_t ip = get32(p + off + 8) ^ MAGIC;
            mapped_ok = port == ntohs(locals[si].sin_port) && ip == ntohl(locals[si].sin_addr.s_addr);
            break;
        }
        off += 4 + (size_t)((l + 3) & ~3);
    }
    if (!mapped_ok) {
        st_invalid++;
        return -1;
    }
    return (long)s;
}

static int open_sockets(void) {
    for (int i = 0; i < o.sockets; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0) { perror("socket"); return -1; }
        int sz = 4 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        struct sockaddr_in any = {.sin_family = AF_INET};
        any.sin_addr.s_addr = o.addr.sin_addr.s_addr; /* same loopback address as the target */
        if (bind(fd, (struct sockaddr *)&any, sizeof any) < 0) { perror("bind"); return -1; }
        if (connect(fd, (struct sockaddr *)&o.addr, sizeof o.addr) < 0) { perror("connect"); return -1; }
        socklen_t len = sizeof locals[i];
        getsockname(fd, (struct sockaddr *)&locals[i], &len);
        fds[i] = fd;
    }
    return 0;
}

/* Per-socket send batch. */
static uint8_t sbuf[MAX_SOCKETS][BATCH][32];
static struct iovec siov[MAX_SOCKETS][BATCH];
static struct mmsghdr smsg[MAX_SOCKETS][BATCH];
static uint32_t sslot[MAX_SOCKETS][BATCH];
static int scount[MAX_SOCKETS];

static void flush(int si, uint64_t t, int measuring) {
    int n = scount[si], done = 0;
    scount[si] = 0;
    while (done < n) {
        int r = sendmmsg(fds[si], smsg[si] + done, (unsigned)(n - done), 0);
        if (r <= 0) {
            /* EAGAIN or ICMP errors: the requests stay unanswered and time out. */
            st_send_err += (uint64_t)(n - done);
            break;
        }
        done += r;
    }
    for (int i = 0; i < n; i++) {
        struct slot *sl = &slots[sslot[si][i]];
        sl->t_send = t;
        sl->live = 1;
        sl->measured = (uint8_t)measuring;
    }
    st_sent += (uint64_t)n;
    if (measuring) st_sent_measured += (uint64_t)n;
}

static void queue(int si, uint32_t s, uint64_t t, int measuring) {
    int k = scount[si];
    slots[s].sock = (uint16_t)si;
    build_request(sbuf[si][k], s);
    sslot[si][k] = s;
    scount[si] = k + 1;
    if (k + 1 == BATCH) flush(si, t, measuring);
}

static uint8_t rbuf[BATCH][MAX_MSG];
static struct iovec riov[BATCH];
static struct mmsghdr rmsg[BATCH];

static void setup_batches(void) {
    for (int si = 0; si < MAX_SOCKETS; si++)
        for (int i = 0; i < BATCH; i++) {
            siov[si][i].iov_base = sbuf[si][i];
            siov[si][i].iov_len = req_len;
            memset(&smsg[si][i], 0, sizeof smsg[si][i]);
            smsg[si][i].msg_hdr.msg_iov = &siov[si][i];
            smsg[si][i].msg_hdr.msg_iovlen = 1;
        }
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = rbuf[i];
        riov[i].iov_len = MAX_MSG;
        memset(&rmsg[i], 0, sizeof rmsg[i]);
        rmsg[i].msg_hdr.msg_iov = &riov[i];
        rmsg[i].msg_hdr.msg_iovlen = 1;
    }
}

/* Reads one batch from socket si; re-arms answered slots when rearm is set. Returns count read. */
static int read_batch(int si, int rearm, uint64_t t_measure0, uint64_t t_end) {
    int r = recvmmsg(fds[si], rmsg, BATCH, MSG_DONTWAIT, NULL);
    if (r <= 0) {
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) st_recv_err++;
        return 0;
    }
    uint64_t t = now_ns();
    int measuring = t >= t_measure0 && t < t_end;
    for (int i = 0; i < r; i++) {
        long s = check_response(rbuf[i], rmsg[i].msg_len, si);
        if (s < 0) continue;
        struct slot *sl = &slots[s];
        sl->live = 0;
        st_valid++;
        if (measuring) st_in_window++;
        if (sl->measured && t < t_end + DRAIN_NS) {
            st_valid_measured++;
            hist_add(t - sl->t_send);
        }
        if (rearm && t < t_end) queue(sl->sock, (uint32_t)s, t, measuring);
    }
    if (rearm)
        for (int k = 0; k < o.sockets; k++)
            if (scount[k]) flush(k, t, measuring);
    return r;
}

static void report(const char *mode, double measured_s, double extra_rate) {
    double cpu = cpu_seconds();
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &o.addr.sin_addr, ip, sizeof ip);
    printf("{\"mode\": \"%s\", \"target\": \"%s:%u\", \"sockets\": %d, \"window\": %d, "
           "\"rate_target\": %.0f, \"fingerprint\": %s, \"duration_s\": %.3f, "
           "\"sent\": %llu, \"sent_measured\": %llu, \"valid\": %llu, \"valid_measured\": %llu, "
           "\"invalid\": %llu, \"stale\": %llu, \"lost\": %llu, \"send_errors\": %llu, "
           "\"recv_errors\": %llu, \"in_window\": %llu, \"responses_per_s\": %.1f, \"loss_fraction\": %.6f, "
           "\"late_sends\": %llu, \"max_schedule_lag_us\": %.1f, "
           "\"latency_us\": {\"n\": %llu, \"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, "
           "\"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}, \"cpu_s\": %.3f}\n",
           mode, ip, ntohs(o.addr.sin_port), o.sockets, o.window, extra_rate,
           o.fingerprint ? "true" : "false", measured_s, (unsigned long long)st_sent,
           (unsigned long long)st_sent_measured, (unsigned long long)st_valid,
           (unsigned long long)st_valid_measured, (unsigned long long)st_invalid,
           (unsigned long long)st_stale, (unsigned long long)st_lost,
           (unsigned long long)st_send_err, (unsigned long long)st_recv_err,
           (unsigned long long)st_in_window,
           measured_s > 0 ? (double)st_in_window / measured_s : 0.0,
           st_sent_measured ? 1.0 - (double)st_valid_measured / (double)st_sent_measured : 0.0,
           (unsigned long long)st_late_sends, (double)max_lag_ns / 1000.0,
           (unsigned long long)hist_n, hist_n ? lat_sum_us / (double)hist_n : -1.0,
           hist_pct(0.50), hist_pct(0.90), hist_pct(0.99), hist_pct(0.999), lat_max_us, cpu);
    fflush(stdout);
}

static int run_sat(void) {
    nslots = (uint32_t)o.window;
    uint64_t t0 = now_ns();
    uint64_t t_measure0 = t0 + (uint64_t)(o.warmup * 1e9);
    uint64_t t_end = t_measure0 + (uint64_t)(o.duration * 1e9);
    uint64_t timeout = (uint64_t)o.timeout_ms * 1000000ull;
    for (uint32_t s = 0; s < nslots; s++) queue((int)(s % (uint32_t)o.sockets), s, t0, 0);
    for (int k = 0; k < o.sockets; k++) if (scount[k]) flush(k, t0, 0);

    struct pollfd pfd[MAX_SOCKETS];
    for (int i = 0; i < o.sockets; i++) pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    uint64_t next_sweep = t0 + timeout / 4;
    uint64_t t = t0;
    /* Bounded by time: t_end + DRAIN_NS, or a signal. */
    while (!stop_flag && (t = now_ns()) < t_end + DRAIN_NS) {
        int n = o.busy ? o.sockets : poll(pfd, (nfds_t)o.sockets, 1);
        if (n > 0)
            for (int i = 0; i < o.sockets; i++)
                if (o.busy || pfd[i].revents)
                    for (int rounds = 0; rounds < 16 && read_batch(i, 1, t_measure0, t_end) == BATCH; rounds++) {}
        t = now_ns();
        if (t >= next_sweep && t < t_end) {
            next_sweep = t + timeout / 4;
            int measuring = t >= t_measure0;
            for (uint32_t s = 0; s < nslots; s++)
                if (slots[s].live && t - slots[s].t_send > timeout) {
                    if (slots[s].measured) st_lost++;
                    queue(slots[s].sock, s, t, measuring);
                }
            for (int k = 0; k < o.sockets; k++) if (scount[k]) flush(k, t, measuring);
        }
    }
    for (uint32_t s = 0; s < nslots; s++) if (slots[s].live && slots[s].measured) st_lost++;
    report("sat", (double)(t_end - t_measure0) / 1e9, 0);
    return 0;
}

static int run_rate(void) {
    nslots = RATE_SLOTS;
    uint64_t t0 = now_ns();
    uint64_t t_measure0 = t0 + (uint64_t)(o.warmup * 1e9);
    uint64_t t_end = t_measure0 + (uint64_t)(o.duration * 1e9);
    double ns_per_req = 1e9 / o.rate;
    struct pollfd pfd[MAX_SOCKETS];
    for (int i = 0; i < o.sockets; i++) pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    uint64_t seq = 0;
    int rr = 0;
    uint64_t t;
    while (!stop_flag && (t = now_ns()) < t_end + DRAIN_NS) {
        if (t < t_end) {
            uint64_t due = (uint64_t)((double)(t - t0) / ns_per_req) + 1;
            if (due > seq) {
                uint64_t sched = t0 + (uint64_t)((double)seq * ns_per_req);
                uint64_t lag = t - sched;
                if (lag > max_lag_ns) max_lag_ns = lag;
                if (lag > 100000) st_late_sends += due - seq;
                int measuring = t >= t_measure0;
                uint64_t todo = due - seq;
                if (todo > BATCH * 4) todo = BATCH * 4; /* catch up gradually if we fell behind */
                /* Everything due now goes out in one sendmmsg on one socket; the next
                 * socket takes the next burst, so the sockets share the load evenly. */
                for (uint64_t i = 0; i < todo; i++, seq++) {
                    uint32_t s = (uint32_t)(seq & (RATE_SLOTS - 1));
                    if (slots[s].live && slots[s].measured) st_lost++; /* never answered */
                    queue(rr, s, t, measuring);
                    if (scount[rr] == 0 && ++rr == o.sockets) rr = 0; /* a full batch went out */
                }
                if (scount[rr]) flush(rr, t, measuring);
                if (++rr == o.sockets) rr = 0;
            }
        }
        /* One poll over all sockets (no waiting), then read only the ready ones. */
        if (poll(pfd, (nfds_t)o.sockets, 0) > 0)
            for (int i = 0; i < o.sockets; i++)
                if (pfd[i].revents)
                    for (int rounds = 0; rounds < 4 && read_batch(i, 0, t_measure0, t_end) == BATCH; rounds++) {}
    }
    for (uint32_t s = 0; s < nslots; s++) if (slots[s].live && slots[s].measured) st_lost++;
    report("rate", (double)(t_end - t_measure0) / 1e9, o.rate);
    return 0;
}

/* ---- trivial responder ---- */
static int run_echo(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int sz = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (bind(fd, (struct sockaddr *)&o.addr, sizeof o.addr) < 0) { perror("bind"); return 1; }
    static struct sockaddr_in peers[BATCH];
    static uint8_t out[BATCH][32];
    static struct iovec oiov[BATCH];
    static struct mmsghdr omsg[BATCH];
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = rbuf[i];
        riov[i].iov_len = MAX_MSG;
        memset(&rmsg[i], 0, sizeof rmsg[i]);
        rmsg[i].msg_hdr.msg_iov = &riov[i];
        rmsg[i].msg_hdr.msg_iovlen = 1;
        rmsg[i].msg_hdr.msg_name = &peers[i];
        rmsg[i].msg_hdr.msg_namelen = sizeof peers[i];
        oiov[i].iov_base = out[i];
        oiov[i].iov_len = 32;
    }
    uint64_t t_end = now_ns() + (uint64_t)(o.duration * 1e9);
    uint64_t answered = 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (!stop_flag && now_ns() < t_end) {
        if (poll(&pfd, 1, 100) <= 0) continue;
        for (int rounds = 0; rounds < 64; rounds++) {
            for (int i = 0; i < BATCH; i++) rmsg[i].msg_hdr.msg_namelen = sizeof peers[i];
            int r = recvmmsg(fd, rmsg, BATCH, MSG_DONTWAIT, NULL);
            if (r <= 0) break;
            int k = 0;
            for (int i = 0; i < r; i++) {
                const uint8_t *p = rbuf[i];
                if (rmsg[i].msg_len < 20 || get16(p) != 0x0001 || get32(p + 4) != MAGIC) continue;
                uint8_t *q = out[k];
                put16(q, 0x0101);
                put16(q + 2, 12);
                memcpy(q + 4, p + 4, 16);
                put16(q + 20, 0x0020);
                put16(q + 22, 8);
                q[24] = 0;
                q[25] = 1;
                put16(q + 26, ntohs(peers[i].sin_port) ^ (uint16_t)(MAGIC >> 16));
                put32(q + 28, ntohl(peers[i].sin_addr.s_addr) ^ MAGIC);
                memset(&omsg[k], 0, sizeof omsg[k]);
                omsg[k].msg_hdr.msg_iov = &oiov[k];
                omsg[k].msg_hdr.msg_iovlen = 1;
                omsg[k].msg_hdr.msg_name = &peers[i];
                omsg[k].msg_hdr.msg_namelen = sizeof peers[i];
                k++;
            }
            int done = 0;
            while (done < k) {
                int s = sendmmsg(fd, omsg + done, (unsigned)(k - done), 0);
                if (s <= 0) break;
                done += s;
            }
            answered += (uint64_t)done;
            if (r < BATCH) break;
        }
    }
    fprintf(stderr, "stunload echo: answered %llu\n", (unsigned long long)answered);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    o.mode = argv[1];
    o.duration = 5;
    o.warmup = 0.5;
    o.sockets = 8;
    o.window = 256;
    o.timeout_ms = 100;
    int have_addr = 0;
    int c;
    optind = 2;
    while ((c = getopt(argc, argv, "t:l:d:W:s:w:r:T:fbB")) != -1) {
        switch (c) {
        case 't': case 'l':
            if (parse_addr(optarg, &o.addr) < 0) usage();
            have_addr = 1;
            break;
        case 'd': o.duration = atof(optarg); break;
        case 'W': o.warmup = atof(optarg); break;
        case 's': o.sockets = atoi(optarg); break;
        case 'w': o.window = atoi(optarg); break;
        case 'r': o.rate = atof(optarg); break;
        case 'T': o.timeout_ms = atoi(optarg); break;
        case 'f': o.fingerprint = 1; break;
        case 'b': o.busy = 1; break;
        case 'B': o.busy = 0; break;
        default: usage();
        }
    }
    if (!have_addr || o.duration <= 0 || o.duration > 3600 || o.warmup < 0 || o.warmup > 600 ||
        o.sockets < 1 || o.sockets > MAX_SOCKETS || o.window < 1 || o.window > 65536 ||
        o.timeout_ms < 1)
        usage();
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(o.mode, "echo")) return run_echo();
    int is_sat = !strcmp(o.mode, "sat");
    if (!is_sat && strcmp(o.mode, "rate")) usage();
    if (!is_sat && (o.rate <= 0 || o.rate > 1e8)) usage();
    if (is_sat && o.window < o.sockets) o.sockets = o.window;
    if (!is_sat) o.window = 0;
    seed();
    crc_init();
    key = (uint32_t)rnd();
    req_len = o.fingerprint ? 28 : 20;
    slots = calloc(is_sat ? (size_t)o.window : RATE_SLOTS, sizeof *slots);
    hist = calloc(HIST_US, sizeof *hist);
    if (!slots || !hist) { perror("calloc"); return 1; }
    setup_batches();
    if (open_sockets() < 0) return 1;
    int rc = is_sat ? run_sat() : run_rate();
    for (int i = 0; i < o.sockets; i++) close(fds[i]);
    return rc;
}
