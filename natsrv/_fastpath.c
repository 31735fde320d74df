/* natsrv._fastpath: the optional native data path (docs/architecture.md, "The native
 * data path").
 *
 * It only moves bytes and follows a table: it holds no policy. Per wake-up the trio
 * shell calls one drain function, which reads up to BATCH x ROUNDS datagrams with
 * recvmmsg and
 *   - on a listener: answers plain RFC 5389/8489 Binding requests (no attribute, or a
 *     correct FINGERPRINT alone, header length == datagram) with exactly the bytes of
 *     natsrv.stun.fast.BindingSuccess (its trailing attributes come from Python), and
 *     forwards ChannelData whose (listener, client, channel) the core installed in the
 *     routing table (RFC 8656 §12.4);
 *   - on the ready relay sockets (all in one call): sends a datagram from a peer whose (relay, peer) the core
 *     installed to its client as ChannelData or a Data indication (RFC 8656 §11.3).
 * Replies go out with sendmmsg, in runs per socket; consecutive datagrams of one socket
 * to one destination, all of one length but the last (which may be shorter), leave as
 * one UDP GSO super-datagram (UDP_SEGMENT: the kernel cuts it back into those
 * datagrams), unless turned off (set_gso) or refused by the kernel. Everything else (a
 * miss, an entry past its deadline, any other message) is handed back to Python
 * untouched, in order, for Server.receive / Server.receive_from_peer, which decide and
 * refill the table.
 *
 * Linux only (recvmmsg/sendmmsg); elsewhere the build fails and setup.py's
 * optional=True leaves the pure-Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64           /* datagrams per recvmmsg */
#define ROUNDS 4           /* recvmmsg calls per drain, at most */
#define RECV_SIZE 65536
#define MAX_TAIL 1024      /* trailing attributes of a Binding answer, at most */
#define ANSWER_MAX (20 + 24 + 24 + MAX_TAIL + 8)
#define KEY_SIZE 26
#define CHANNEL_MIN 0x4000
#define CHANNEL_MAX 0x7FFE
#define MAX_DATA_INDICATION_PAYLOAD 65504
#define FINGERPRINT_XOR 0x5354554eU

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103    /* linux/udp.h, Linux 4.18 */
#endif
#define GSO_MAX_SEGMENTS 64       /* UDP_MAX_SEGMENTS of the kernels before 6.x */
#define GSO_MAX_BYTES 65507       /* one send: what an IPv4 datagram can carry */
#define GSO_MAX_SEGMENT_V4 1472   /* a segment must fit the path MTU: 1500-byte links */
#define GSO_MAX_SEGMENT_V6 1452
#define GSO_MIN_RUN 2             /* datagrams coalesced into one send, at least */
#define GSO_FD_BITS 65536         /* sockets below this remember a refusal each */

static const uint8_t COOKIE[4] = {0x21, 0x12, 0xA4, 0x42};

/* ---- byte helpers and CRC-32 (the zlib / IEEE 802.3 one, RFC 8489 §14.7) ---------- */
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFU;
    while (n--) c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFU;
}

static inline void wr16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline unsigned rd16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }
static inline uint32_t rd32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* An address as (family code of RFC 8489 §14.1, raw address, port), or -1. */
static int addr_parts(const struct sockaddr *sa, const uint8_t **ip, size_t *len, unsigned *port) {
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
        *ip = (const uint8_t *)&s->sin_addr; *len = 4; *port = ntohs(s->sin_port);
        return 1;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
        *ip = (const uint8_t *)&s->sin6_addr; *len = 16; *port = ntohs(s->sin6_port);
        return 2;
    }
    return -1;
}

/* ---- Binding: what stun/fast.py BindingSuccess.answer_plain does ---------------- */
static Py_ssize_t binding_answer_into(uint8_t *out, const uint8_t *d, size_t n,
                                      const struct sockaddr *src, const uint8_t *tail,
                                      size_t tail_len, int mapped) {
    static const uint8_t head_fp[4] = {0x00, 0x01, 0x00, 0x08};
    static const uint8_t fp_only[4] = {0x80, 0x28, 0x00, 0x04};
    int fingerprint;
    if (n == 20) {
        if (d[0] || d[1] != 1 || d[2] || d[3] || memcmp(d + 4, COOKIE, 4)) return -1;
        fingerprint = 0;
    } else if (n == 28) {
        if (memcmp(d, head_fp, 4) || memcmp(d + 4, COOKIE, 4) || memcmp(d + 20, fp_only, 4))
            return -1;
        if (rd32(d + 24) != (crc32_of(d, 20) ^ FINGERPRINT_XOR)) return -1;
        fingerprint = 1;
    } else {
        return -1;
    }
    if (tail_len > MAX_TAIL) return -1;
    const uint8_t *ip; size_t alen; unsigned port;
    int family = addr_parts(src, &ip, &alen, &port);
    if (family < 0) return -1;
    uint8_t *p = out + 20;
    wr16(p, 0x0020); wr16(p + 2, (unsigned)(4 + alen));  /* XOR-MAPPED-ADDRESS */
    p[4] = 0; p[5] = (uint8_t)family; wr16(p + 6, port ^ 0x2112);
    for (size_t i = 0; i < alen; i++) p[8 + i] = ip[i] ^ d[4 + i];  /* cookie, then ID */
    p += 8 + alen;
    if (mapped) {  /* MAPPED-ADDRESS */
        wr16(p, 0x0001); wr16(p + 2, (unsigned)(4 + alen));
        p[4] = 0; p[5] = (uint8_t)family; wr16(p + 6, port);
        memcpy(p + 8, ip, alen);
        p += 8 + alen;
    }
    if (tail_len) memcpy(p, tail, tail_len);
    p += tail_len;
    wr16(out, 0x0101);
    wr16(out + 2, (unsigned)((size_t)(p - out) - 20 + (fingerprint ? 8 : 0)));
    memcpy(out + 4, d + 4, 16);
    if (fingerprint) {
        uint32_t c = crc32_of(out, (size_t)(p - out)) ^ FINGERPRINT_XOR;
        wr16(p, 0x8028); wr16(p + 2, 4); wr32(p + 4, c);
        p += 8;
    }
    return p - out;
}

/* ---- the routing table: a dict of key bytes -> Route, filled by the core ---------- */
typedef struct {
    PyObject_HEAD
    int fd;                        /* the socket to send from */
    int channel;                   /* to a client: channel, 0 for a Data indication */
    double deadline;               /* valid while now < deadline */
    unsigned long long packets;    /* payload datagrams and bytes sent through it */
    unsigned long long bytes;
    socklen_t dest_len;
    struct sockaddr_storage dest;
} Route;

static PyTypeObject RouteType;

static int parse_address(const char *host, unsigned port, struct sockaddr_storage *ss,
                         socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    if (port > 65535) return -1;
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET; s4->sin_port = htons((uint16_t)port);
        *len = sizeof *s4;
        return 0;
    }
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6; s6->sin6_port = htons((uint16_t)port);
        *len = sizeof *s6;
        return 0;
    }
    return -1;
}

static int make_key(uint8_t *key, int fd, const struct sockaddr *sa, unsigned channel) {
    const uint8_t *ip; size_t alen; unsigned port;
    int family = addr_parts(sa, &ip, &alen, &port);
    if (family < 0) return -1;
    memset(key, 0, KEY_SIZE);
    wr32(key, (uint32_t)fd);
    key[4] = (uint8_t)family;
    wr16(key + 6, port);
    memcpy(key + 8, ip, alen);
    wr16(key + 24, channel);
    return 0;
}

/* The live Route for a key, borrowed, or NULL (a miss; no exception set). */
static Route *lookup(PyObject *routes, int fd, const struct sockaddr *sa, unsigned channel,
                     double now) {
    uint8_t key[KEY_SIZE];
    if (make_key(key, fd, sa, channel) < 0) return NULL;
    PyObject *k = PyBytes_FromStringAndSize((const char *)key, KEY_SIZE);
    if (k == NULL) { PyErr_Clear(); return NULL; }
    PyObject *v = PyDict_GetItemWithError(routes, k);
    Py_DECREF(k);
    if (v == NULL) { PyErr_Clear(); return NULL; }
    if (!Py_IS_TYPE(v, &RouteType)) return NULL;
    Route *r = (Route *)v;
    return now < r->deadline ? r : NULL;
}

static int Route_init(Route *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "host", "port", "channel", "deadline", NULL};
    const char *host; unsigned port; int fd, channel; double deadline;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "isIid", kwlist, &fd, &host, &port, &channel,
                                     &deadline))
        return -1;
    if (parse_address(host, port, &self->dest, &self->dest_len) < 0) {
        PyErr_SetString(PyExc_ValueError, "not an IP address and port");
        return -1;
    }
    if (channel != 0 && (channel < CHANNEL_MIN || channel > CHANNEL_MAX)) {
        PyErr_SetString(PyExc_ValueError, "channel out of range");
        return -1;
    }
    self->fd = fd; self->channel = channel; self->deadline = deadline;
    self->packets = 0; self->bytes = 0;
    return 0;
}

static PyMemberDef Route_members[] = {
    {"fd", T_INT, offsetof(Route, fd), READONLY, "socket sent from"},
    {"channel", T_INT, offsetof(Route, channel), READONLY, "channel, 0: Data indication"},
    {"deadline", T_DOUBLE, offsetof(Route, deadline), 0, "valid while now < deadline"},
    {"packets", T_ULONGLONG, offsetof(Route, packets), READONLY, "datagrams forwarded"},
    {"bytes", T_ULONGLONG, offsetof(Route, bytes), READONLY, "payload bytes forwarded"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "natsrv._fastpath.Route",
    .tp_basicsize = sizeof(Route),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Route(fd, host, port, channel, deadline): where a table hit is sent.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Route_init,
    .tp_members = Route_members,
};

/* ---- one datagram's decision ------------------------------------------------------- */
enum { MISS = 0, ANSWER = 1, FORWARD = 2 };

/* From a client on a listener: a Binding answer into `out`, a ChannelData payload to
 * forward (`*payload`, `*plen`, `*route`), or a miss. */
static int listener_decide(const uint8_t *d, size_t n, const struct sockaddr *src, int fd,
                           const uint8_t *tail, size_t tail_len, int mapped,
                           PyObject *routes, double now, uint8_t *out, size_t *out_len,
                           const uint8_t **payload, size_t *plen, Route **route) {
    if (n < 4) return MISS;
    if (d[0] < 0x40) {
        Py_ssize_t r = binding_answer_into(out, d, n, src, tail, tail_len, mapped);
        if (r < 0) return MISS;
        *out_len = (size_t)r;
        return ANSWER;
    }
    if (d[0] > 0x7F || routes == NULL) return MISS;
    unsigned channel = rd16(d), length = rd16(d + 2);
    if (channel < CHANNEL_MIN || channel > CHANNEL_MAX || 4 + (size_t)length > n) return MISS;
    Route *r = lookup(routes, fd, src, channel, now);
    if (r == NULL) return MISS;
    *payload = d + 4; *plen = length; *route = r;
    return FORWARD;
}

/* Random transaction IDs for Data indications, from getrandom() in blocks. */
static uint8_t rand_pool[4096];
static size_t rand_left = 0;

static int random_id(uint8_t *out) {
    if (rand_left < 12) {
        ssize_t got = getrandom(rand_pool, sizeof rand_pool, 0);
        if (got != (ssize_t)sizeof rand_pool) return -1;
        rand_left = sizeof rand_pool;
    }
    rand_left -= 12;
    memcpy(out, rand_pool + rand_left, 12);
    memset(rand_pool + rand_left, 0, 12);
    return 0;
}

/* From a peer on a relay socket: the header to put before the payload (`head`,
 * `*head_len`) and the padding after it (`*pad`), or a miss. */
static int relay_decide(size_t n, const struct sockaddr *peer, int fd, PyObject *routes,
                        double now, uint8_t *head, size_t *head_len, size_t *pad,
                        Route **route) {
    Route *r = lookup(routes, fd, peer, 0, now);
    if (r == NULL) return MISS;
    if (r->channel) {  /* ChannelData over UDP: no padding (RFC 8656 §12.5) */
        if (n > 0xFFFF) return MISS;
        wr16(head, (unsigned)r->channel); wr16(head + 2, (unsigned)n);
        *head_len = 4; *pad = 0;
    } else {           /* Data indication: XOR-PEER-ADDRESS, DATA (RFC 8656 §11.3) */
        const uint8_t *ip; size_t alen; unsigned port;
        int family = addr_parts(peer, &ip, &alen, &port);
        if (family < 0 || n > MAX_DATA_INDICATION_PAYLOAD) return MISS;
        uint8_t *p = head;
        size_t padding = (4 - (n & 3)) & 3;
        wr16(p, 0x0017);
        wr16(p + 2, (unsigned)(8 + alen + 4 + n + padding));
        memcpy(p + 4, COOKIE, 4);
        if (random_id(p + 8) < 0) return MISS;
        p += 20;
        wr16(p, 0x0012); wr16(p + 2, (unsigned)(4 + alen));
        p[4] = 0; p[5] = (uint8_t)family; wr16(p + 6, port ^ 0x2112);
        for (size_t i = 0; i < alen; i++) p[8 + i] = ip[i] ^ head[4 + i];
        p += 8 + alen;
        wr16(p, 0x0013); wr16(p + 2, (unsigned)n);
        p += 4;
        *head_len = (size_t)(p - head); *pad = padding;
    }
    *route = r;
    return FORWARD;
}

/* ---- batched I/O ------------------------------------------------------------------- */
static uint8_t rbuf[BATCH][RECV_SIZE];
static struct sockaddr_storage raddr[BATCH];
static struct iovec riov[BATCH];
static struct mmsghdr rmsg[BATCH];

static uint8_t shead[BATCH][ANSWER_MAX];
static struct iovec siov[BATCH][3];
static struct sockaddr_storage saddr[BATCH];
static struct mmsghdr smsg[BATCH];
static size_t slen[BATCH];         /* each queued datagram's length */
static int sfd[BATCH];
static const uint8_t zeros[4];

typedef struct {
    long recv_errors, send_errors, send_dropped;
    long gso_sends, gso_segments, gso_refused;  /* super-datagrams, datagrams in them */
} IoCounts;

/* recvmmsg into buffers [first, first + vlen); how many datagrams came. */
static int receive_into(int fd, int first, int vlen, IoCounts *io) {
    for (int i = first; i < first + vlen; i++) {
        riov[i].iov_base = rbuf[i]; riov[i].iov_len = RECV_SIZE;
        memset(&rmsg[i].msg_hdr, 0, sizeof rmsg[i].msg_hdr);
        rmsg[i].msg_hdr.msg_name = &raddr[i];
        rmsg[i].msg_hdr.msg_namelen = sizeof raddr[i];
        rmsg[i].msg_hdr.msg_iov = &riov[i];
        rmsg[i].msg_hdr.msg_iovlen = 1;
    }
    for (int attempt = 0; attempt < BATCH; attempt++) {
        int got = recvmmsg(fd, rmsg + first, (unsigned)vlen, MSG_DONTWAIT, NULL);
        if (got >= 0) return got;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno != EINTR) io->recv_errors++;  /* ICMP errors (ECONNREFUSED): not ours */
    }
    return 0;
}

static int receive_batch(int fd, IoCounts *io) { return receive_into(fd, 0, BATCH, io); }

static void queue_send(int *count, int fd, const struct sockaddr *dest, socklen_t dest_len,
                       const void *a, size_t alen, const void *b, size_t blen, size_t pad) {
    int i = (*count)++;
    sfd[i] = fd;
    if (dest_len > (socklen_t)sizeof saddr[i]) dest_len = (socklen_t)sizeof saddr[i];
    memcpy(&saddr[i], dest, dest_len);
    int k = 0;
    siov[i][k].iov_base = (void *)a; siov[i][k++].iov_len = alen;
    if (blen) { siov[i][k].iov_base = (void *)b; siov[i][k++].iov_len = blen; }
    if (pad) { siov[i][k].iov_base = (void *)zeros; siov[i][k++].iov_len = pad; }
    slen[i] = alen + blen + pad;
    memset(&smsg[i].msg_hdr, 0, sizeof smsg[i].msg_hdr);
    smsg[i].msg_hdr.msg_name = &saddr[i];
    smsg[i].msg_hdr.msg_namelen = dest_len;
    smsg[i].msg_hdr.msg_iov = siov[i];
    smsg[i].msg_hdr.msg_iovlen = (size_t)k;
}

/* ---- UDP GSO (UDP_SEGMENT, Linux 4.18): runs to one destination in one send -------- */
enum { GSO_OFF = 0, GSO_ON = 1 };
static int gso_state = GSO_OFF;      /* set_gso() turns it on; a refusal turns it off */
static int gso_kernel = -1;          /* whether the kernel knows UDP_SEGMENT; -1: not asked */
static uint8_t gso_refused_fd[GSO_FD_BITS / 8];  /* sockets that refused it */

/* Whether this kernel has UDP_SEGMENT. A kernel without it would ignore the cmsg and
 * send the run as one datagram, so this is asked before GSO is ever used. */
static int gso_kernel_supports(void) {
    if (gso_kernel < 0) {
        int s = socket(AF_INET, SOCK_DGRAM, 0), size = 0;
        socklen_t len = sizeof size;
        gso_kernel = s >= 0 && getsockopt(s, SOL_UDP, UDP_SEGMENT, &size, &len) == 0;
        if (s >= 0) close(s);
    }
    return gso_kernel;
}

static int gso_allowed(int fd) {
    if (gso_state != GSO_ON) return 0;
    if (fd >= 0 && fd < GSO_FD_BITS)
        return !(gso_refused_fd[fd >> 3] & (1u << (fd & 7)));
    return 1;
}

/* The kernel refused a super-datagram on fd with `err`: the device or the kernel cannot
 * (EIO: no checksum offload; ENOPROTOOPT, EOPNOTSUPP) turns GSO off for the process; a
 * segment this socket's path cannot carry (EINVAL: larger than the path MTU, EMSGSIZE)
 * turns it off for the socket (and for the process when the socket is past the
 * bitmap). A later socket given the same descriptor inherits it: a lost optimization,
 * never a lost datagram. */
static int gso_refusal(int fd, int err) {
    if (err == EINVAL || err == EMSGSIZE) {
        if (fd >= 0 && fd < GSO_FD_BITS) gso_refused_fd[fd >> 3] |= (uint8_t)(1u << (fd & 7));
        else gso_state = GSO_OFF;
        return 1;
    }
    if (err == EIO || err == ENOPROTOOPT || err == EOPNOTSUPP) {
        gso_state = GSO_OFF;
        return 1;
    }
    return 0;
}

static size_t gso_max_segment(const struct sockaddr_storage *dest) {
    return dest->ss_family == AF_INET6 ? GSO_MAX_SEGMENT_V6 : GSO_MAX_SEGMENT_V4;
}

static int same_destination(int a, int b) {
    socklen_t la = smsg[a].msg_hdr.msg_namelen;
    return la == smsg[b].msg_hdr.msg_namelen && memcmp(&saddr[a], &saddr[b], la) == 0;
}

/* One socket's messages for sendmmsg: gmsg[m] carries the queued datagrams
 * gidx[gfirst[m]] .. gidx[gfirst[m] + gsegs[m] - 1], as one super-datagram when
 * gsegs[m] > 1 (its iovecs in giov, its UDP_SEGMENT cmsg in gctl[m]). */
typedef union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
} GsoControl;

static struct mmsghdr gmsg[BATCH];
static struct iovec giov[BATCH * 3];
static GsoControl gctl[BATCH];
static int gidx[BATCH], gfirst[BATCH], gsegs[BATCH];

/* The messages for gidx[from..n) (queued sends of one socket, in order); with `gso`,
 * runs to one destination coalesced by the kernel's rule: every segment gso_size bytes
 * but the last, which may be shorter (never empty); at most GSO_MAX_SEGMENTS and
 * GSO_MAX_BYTES each. How many messages. */
static int build_messages(int from, int n, int gso) {
    int m = 0, v = 0;
    for (int i = from; i < n && m < BATCH;) {
        int a = gidx[i], j = i + 1;
        size_t seg = slen[a], total = seg;
        if (gso && seg > 0 && seg <= gso_max_segment(&saddr[a])) {
            while (j < n && j - i < GSO_MAX_SEGMENTS) {
                int b = gidx[j];
                size_t len = slen[b];
                if (len == 0 || len > seg || total + len > GSO_MAX_BYTES || !same_destination(a, b))
                    break;
                total += len;
                j++;
                if (len < seg) break;  /* a shorter one ends the run */
            }
        }
        if (j - i < GSO_MIN_RUN) j = i + 1;
        gfirst[m] = i;
        gsegs[m] = j - i;
        if (j - i == 1) {
            gmsg[m] = smsg[a];
        } else {
            struct msghdr *h = &gmsg[m].msg_hdr;
            memset(h, 0, sizeof *h);
            h->msg_name = &saddr[a];
            h->msg_namelen = smsg[a].msg_hdr.msg_namelen;
            h->msg_iov = &giov[v];
            for (int k = i; k < j; k++) {
                const struct msghdr *q = &smsg[gidx[k]].msg_hdr;
                for (size_t e = 0; e < q->msg_iovlen && v < BATCH * 3; e++) giov[v++] = q->msg_iov[e];
            }
            h->msg_iovlen = (size_t)(&giov[v] - h->msg_iov);
            memset(&gctl[m], 0, sizeof gctl[m]);
            h->msg_control = gctl[m].buf;
            h->msg_controllen = sizeof gctl[m].buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t size = (uint16_t)seg;
            memcpy(CMSG_DATA(c), &size, sizeof size);
        }
        gmsg[m].msg_len = 0;
        m++;
        i = j;
    }
    return m;
}

/* Send what was queued: one sendmmsg per socket, its datagrams in the order queued
 * (different sockets' datagrams are independent), runs to one destination as GSO
 * super-datagrams. A full buffer drops the rest of that socket's datagrams (counted),
 * as the Python path does; a super-datagram the kernel refuses is sent again one
 * datagram at a time, with the rest of that socket's batch. */
static void flush_sends(int count, IoCounts *io) {
    static unsigned char done[BATCH];
    memset(done, 0, (size_t)count);
    for (int i = 0; i < count; i++) {
        if (done[i]) continue;
        int fd = sfd[i], n = 0;
        for (int j = i; j < count; j++)
            if (!done[j] && sfd[j] == fd) { gidx[n++] = j; done[j] = 1; }
        int m = build_messages(0, n, gso_allowed(fd));
        int k = 0;
        while (k < m) {
            int sent = sendmmsg(fd, gmsg + k, (unsigned)(m - k), MSG_DONTWAIT);
            if (sent > 0) {
                for (int s = k; s < k + sent; s++)
                    if (gsegs[s] > 1) { io->gso_sends++; io->gso_segments += gsegs[s]; }
                k += sent;
                continue;
            }
            if (sent < 0 && errno == EINTR) continue;
            if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
                for (int s = k; s < m; s++) io->send_dropped += gsegs[s];
                break;
            }
            if (sent < 0 && gsegs[k] > 1 && gso_refusal(fd, errno)) {
                io->gso_refused++;
                m = build_messages(gfirst[k], n, 0);
                k = 0;
                continue;
            }
            io->send_errors += gsegs[k];  /* this message failed (e.g. no route): skip it */
            k++;
        }
    }
}

static PyObject *address_tuple(const struct sockaddr *sa) {
    char host[INET6_ADDRSTRLEN];
    const uint8_t *ip; size_t alen; unsigned port;
    int family = addr_parts(sa, &ip, &alen, &port);
    if (family < 0) Py_RETURN_NONE;
    if (inet_ntop(family == 1 ? AF_INET : AF_INET6, ip, host, sizeof host) == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("(sI)", host, port);
}

static int append_miss(PyObject *misses, const uint8_t *d, size_t n, const struct sockaddr *sa) {
    PyObject *addr = address_tuple(sa);
    if (addr == NULL) return -1;
    if (addr == Py_None) { Py_DECREF(addr); return 0; }
    PyObject *item = Py_BuildValue("(y#N)", (const char *)d, (Py_ssize_t)n, addr);
    if (item == NULL) return -1;
    int r = PyList_Append(misses, item);
    Py_DECREF(item);
    return r;
}

/* Whether two addresses are the same endpoint. */
static int same_endpoint(const struct sockaddr *a, const struct sockaddr *b) {
    const uint8_t *ipa, *ipb; size_t la, lb; unsigned pa, pb;
    if (addr_parts(a, &ipa, &la, &pa) < 0 || addr_parts(b, &ipb, &lb, &pb) < 0) return 0;
    return la == lb && pa == pb && memcmp(ipa, ipb, la) == 0;
}

static PyObject *drain_listener(PyObject *mod, PyObject *args) {
    int fd, mapped; Py_buffer tail; PyObject *routes; double now;
    if (!PyArg_ParseTuple(args, "iy*pO!d", &fd, &tail, &mapped, &PyDict_Type, &routes, &now))
        return NULL;
    if (tail.len > MAX_TAIL) {
        PyBuffer_Release(&tail);
        PyErr_SetString(PyExc_ValueError, "trailing attributes too long");
        return NULL;
    }
    PyObject *misses = PyList_New(0);
    if (misses == NULL) { PyBuffer_Release(&tail); return NULL; }
    IoCounts io = {0, 0, 0, 0, 0, 0};
    long answered = 0, forwarded = 0;
    int more = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int got = receive_batch(fd, &io);
        int count = 0, missed = 0;
        int miss_from[BATCH];  /* who had a datagram handed to Python in this batch */
        for (int i = 0; i < got; i++) {
            const struct sockaddr *src = (const struct sockaddr *)&raddr[i];
            size_t n = rmsg[i].msg_len, out_len = 0, plen = 0;
            const uint8_t *payload = NULL; Route *route = NULL;
            /* A client whose earlier datagram went to Python gets the rest of its batch
             * answered there too, so it sees its answers in the order it asked. */
            int after_miss = 0;
            for (int m = 0; m < missed && !after_miss; m++)
                after_miss = same_endpoint(src, (const struct sockaddr *)&raddr[miss_from[m]]);
            int what = after_miss ? MISS : listener_decide(rbuf[i], n, src, fd, tail.buf, (size_t)tail.len, mapped,
                                       routes, now, shead[count], &out_len, &payload, &plen,
                                       &route);
            if (what == ANSWER) {
                queue_send(&count, fd, src, rmsg[i].msg_hdr.msg_namelen, shead[count], out_len,
                           NULL, 0, 0);
                answered++;
            } else if (what == FORWARD) {
                queue_send(&count, route->fd, (const struct sockaddr *)&route->dest,
                           route->dest_len, payload, plen, NULL, 0, 0);
                route->packets++; route->bytes += plen;
                forwarded++;
            } else {
                if (!after_miss) miss_from[missed++] = i;
                if (append_miss(misses, rbuf[i], n, src) < 0) {
                    flush_sends(count, &io);
                    PyBuffer_Release(&tail); Py_DECREF(misses);
                    return NULL;
                }
            }
        }
        flush_sends(count, &io);
        if (got < BATCH) { more = 0; break; }
        more = 1;
    }
    PyBuffer_Release(&tail);
    return Py_BuildValue("(NllllllllO)", misses, answered, forwarded, io.recv_errors,
                         io.send_errors, io.send_dropped, io.gso_sends, io.gso_segments,
                         io.gso_refused, more ? Py_True : Py_False);
}

static int append_relay_miss(PyObject *misses, int fd, const uint8_t *d, size_t n,
                             const struct sockaddr *sa) {
    PyObject *addr = address_tuple(sa);
    if (addr == NULL) return -1;
    if (addr == Py_None) { Py_DECREF(addr); return 0; }
    PyObject *item = Py_BuildValue("(iy#N)", fd, (const char *)d, (Py_ssize_t)n, addr);
    if (item == NULL) return -1;
    int r = PyList_Append(misses, item);
    Py_DECREF(item);
    return r;
}

/* Several ready relay sockets in one call: their datagrams share the receive buffers,
 * and what goes to clients leaves in one sendmmsg per listener. */
static PyObject *drain_relays(PyObject *mod, PyObject *args) {
    PyObject *fds; PyObject *routes; double now;
    if (!PyArg_ParseTuple(args, "O!O!d", &PyList_Type, &fds, &PyDict_Type, &routes, &now))
        return NULL;
    PyObject *misses = PyList_New(0);
    if (misses == NULL) return NULL;
    IoCounts io = {0, 0, 0, 0, 0, 0};
    long forwarded = 0;
    int more = 0, used = 0, count = 0;
    Py_ssize_t nfds = PyList_GET_SIZE(fds);
    for (Py_ssize_t f = 0; f < nfds; f++) {
        int fd = (int)PyLong_AsLong(PyList_GET_ITEM(fds, f));
        if (fd == -1 && PyErr_Occurred()) { Py_DECREF(misses); return NULL; }
        int taken = 0;  /* at most BATCH datagrams per socket per call */
        while (taken < BATCH) {
            if (used == BATCH) { flush_sends(count, &io); used = 0; count = 0; }
            int room = BATCH - used < BATCH - taken ? BATCH - used : BATCH - taken;
            int got = receive_into(fd, used, room, &io);
            for (int i = used; i < used + got; i++) {
                const struct sockaddr *peer = (const struct sockaddr *)&raddr[i];
                size_t n = rmsg[i].msg_len, head_len = 0, pad = 0;
                Route *route = NULL;
                if (relay_decide(n, peer, fd, routes, now, shead[count], &head_len, &pad,
                                 &route) == FORWARD) {
                    queue_send(&count, route->fd, (const struct sockaddr *)&route->dest,
                               route->dest_len, shead[count], head_len, rbuf[i], n, pad);
                    route->packets++; route->bytes += n;
                    forwarded++;
                } else if (append_relay_miss(misses, fd, rbuf[i], n, peer) < 0) {
                    flush_sends(count, &io);
                    Py_DECREF(misses);
                    return NULL;
                }
            }
            used += got;
            taken += got;
            if (got < room) break;
        }
        if (taken >= BATCH) more = 1;
    }
    flush_sends(count, &io);
    return Py_BuildValue("(NlllllllO)", misses, forwarded, io.recv_errors, io.send_errors,
                         io.send_dropped, io.gso_sends, io.gso_segments, io.gso_refused,
                         more ? Py_True : Py_False);
}

/* ---- single-datagram entry points (differential tests and the fuzzer) ------------- */
static PyObject *binding_answer(PyObject *mod, PyObject *args) {
    Py_buffer data, tail; const char *host; unsigned port; int mapped;
    if (!PyArg_ParseTuple(args, "y*sIy*p", &data, &host, &port, &tail, &mapped)) return NULL;
    struct sockaddr_storage ss; socklen_t len;
    PyObject *result = NULL;
    if (parse_address(host, port, &ss, &len) < 0) {
        PyErr_SetString(PyExc_ValueError, "not an IP address and port");
    } else if (tail.len > MAX_TAIL) {
        PyErr_SetString(PyExc_ValueError, "trailing attributes too long");
    } else {
        uint8_t out[ANSWER_MAX];
        Py_ssize_t n = binding_answer_into(out, data.buf, (size_t)data.len,
                                           (struct sockaddr *)&ss, tail.buf, (size_t)tail.len,
                                           mapped);
        if (n < 0) { result = Py_None; Py_INCREF(result); }
        else result = PyBytes_FromStringAndSize((const char *)out, n);
    }
    PyBuffer_Release(&data); PyBuffer_Release(&tail);
    return result;
}

static PyObject *listener_decision(PyObject *mod, PyObject *args) {
    Py_buffer data, tail; const char *host; unsigned port; int mapped, fd;
    PyObject *routes; double now;
    if (!PyArg_ParseTuple(args, "y*sIy*pO!id", &data, &host, &port, &tail, &mapped,
                          &PyDict_Type, &routes, &fd, &now))
        return NULL;
    struct sockaddr_storage ss; socklen_t len;
    PyObject *result = NULL;
    if (parse_address(host, port, &ss, &len) < 0) {
        PyErr_SetString(PyExc_ValueError, "not an IP address and port");
    } else if (tail.len > MAX_TAIL) {
        PyErr_SetString(PyExc_ValueError, "trailing attributes too long");
    } else {
        uint8_t out[ANSWER_MAX]; size_t out_len = 0, plen = 0;
        const uint8_t *payload = NULL; Route *route = NULL;
        int what = listener_decide(data.buf, (size_t)data.len, (struct sockaddr *)&ss, fd,
                                   tail.buf, (size_t)tail.len, mapped, routes, now, out,
                                   &out_len, &payload, &plen, &route);
        if (what == ANSWER)
            result = Py_BuildValue("(sy#)", "answer", (const char *)out, (Py_ssize_t)out_len);
        else if (what == FORWARD)
            result = Py_BuildValue("(sy#)", "forward", (const char *)payload, (Py_ssize_t)plen);
        else { result = Py_None; Py_INCREF(result); }
    }
    PyBuffer_Release(&data); PyBuffer_Release(&tail);
    return result;
}

static PyObject *relay_decision(PyObject *mod, PyObject *args) {
    Py_buffer data; const char *host; unsigned port; int fd; PyObject *routes; double now;
    if (!PyArg_ParseTuple(args, "y*sIO!id", &data, &host, &port, &PyDict_Type, &routes, &fd,
                          &now))
        return NULL;
    struct sockaddr_storage ss; socklen_t len;
    PyObject *result = NULL;
    if (parse_address(host, port, &ss, &len) < 0) {
        PyErr_SetString(PyExc_ValueError, "not an IP address and port");
    } else {
        uint8_t head[ANSWER_MAX]; size_t head_len = 0, pad = 0; Route *route = NULL;
        if (relay_decide((size_t)data.len, (struct sockaddr *)&ss, fd, routes, now, head,
                         &head_len, &pad, &route) == FORWARD) {
            PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(head_len + data.len + pad));
            if (out != NULL) {
                char *p = PyBytes_AS_STRING(out);
                memcpy(p, head, head_len);
                memcpy(p + head_len, data.buf, (size_t)data.len);
                memset(p + head_len + data.len, 0, pad);
            }
            result = out;
        } else {
            result = Py_None; Py_INCREF(result);
        }
    }
    PyBuffer_Release(&data);
    return result;
}

static PyObject *set_gso(PyObject *mod, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    memset(gso_refused_fd, 0, sizeof gso_refused_fd);
    gso_state = on && gso_kernel_supports() ? GSO_ON : GSO_OFF;
    return PyBool_FromLong(gso_state == GSO_ON);
}

static PyObject *gso_enabled(PyObject *mod, PyObject *arg) {
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return NULL;
    }
    return PyBool_FromLong(gso_allowed((int)fd));
}

static PyObject *route_key(PyObject *mod, PyObject *args) {
    int fd; const char *host; unsigned port, channel;
    if (!PyArg_ParseTuple(args, "isII", &fd, &host, &port, &channel)) return NULL;
    struct sockaddr_storage ss; socklen_t len;
    uint8_t key[KEY_SIZE];
    if (parse_address(host, port, &ss, &len) < 0 || channel > 0xFFFF
        || make_key(key, fd, (struct sockaddr *)&ss, channel) < 0) {
        PyErr_SetString(PyExc_ValueError, "not an IP address, port and channel");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)key, KEY_SIZE);
}

/* send_datagrams(fd, [(data, (host, port)), ...]) -> (sent, send_errors, send_dropped):
 * the answers the Python core gave to the datagrams a drain handed it, sent from the
 * listener ``fd`` with one sendmmsg per BATCH instead of one sendto each. As in
 * flush_sends, a full buffer drops the rest of that batch (counted) and a message the
 * kernel refuses (or whose address is not an IP) is counted and skipped. */
static struct mmsghdr bmsg[BATCH];
static struct iovec biov[BATCH];
static struct sockaddr_storage baddr[BATCH];

static PyObject *send_datagrams(PyObject *mod, PyObject *args) {
    int fd; PyObject *items;
    if (!PyArg_ParseTuple(args, "iO!", &fd, &PyList_Type, &items)) return NULL;
    Py_ssize_t total = PyList_GET_SIZE(items), at = 0;
    long sent_total = 0, errors = 0, dropped = 0;
    while (at < total) {
        int n = 0;
        /* The list's items keep the bytes alive: the GIL is held throughout. */
        while (at < total && n < BATCH) {
            PyObject *item = PyList_GET_ITEM(items, at++);
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
                || !PyBytes_Check(PyTuple_GET_ITEM(item, 0))
                || !PyTuple_Check(PyTuple_GET_ITEM(item, 1))
                || PyTuple_GET_SIZE(PyTuple_GET_ITEM(item, 1)) < 2) {
                PyErr_SetString(PyExc_TypeError, "items are (bytes, (host, port))");
                return NULL;
            }
            PyObject *data = PyTuple_GET_ITEM(item, 0), *dest = PyTuple_GET_ITEM(item, 1);
            const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(dest, 0));
            if (host == NULL) return NULL;
            unsigned long port = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(dest, 1));
            if (port == (unsigned long)-1 && PyErr_Occurred()) return NULL;
            socklen_t len;
            if (port > 65535 || parse_address(host, (unsigned)port, &baddr[n], &len) < 0) {
                errors++;
                continue;
            }
            biov[n].iov_base = PyBytes_AS_STRING(data);
            biov[n].iov_len = (size_t)PyBytes_GET_SIZE(data);
            memset(&bmsg[n].msg_hdr, 0, sizeof bmsg[n].msg_hdr);
            bmsg[n].msg_hdr.msg_name = &baddr[n];
            bmsg[n].msg_hdr.msg_namelen = len;
            bmsg[n].msg_hdr.msg_iov = &biov[n];
            bmsg[n].msg_hdr.msg_iovlen = 1;
            n++;
        }
        int k = 0;
        while (k < n) {
            int sent = sendmmsg(fd, bmsg + k, (unsigned)(n - k), MSG_DONTWAIT);
            if (sent > 0) { k += sent; sent_total += sent; continue; }
            if (sent < 0 && errno == EINTR) continue;
            if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
                dropped += n - k;
                break;
            }
            errors++;  /* this message failed (e.g. no route): skip it */
            k++;
        }
    }
    return Py_BuildValue("(lll)", sent_total, errors, dropped);
}

static PyMethodDef methods[] = {
    {"send_datagrams", send_datagrams, METH_VARARGS,
     "send_datagrams(fd, [(data, (host, port)), ...]) -> (sent, send_errors, send_dropped)"},
    {"drain_listener", drain_listener, METH_VARARGS,
     "drain_listener(fd, tail, mapped, routes, now) -> (misses, answered, forwarded, "
     "recv_errors, send_errors, send_dropped, gso_sends, gso_segments, gso_refused, more)"},
    {"drain_relays", drain_relays, METH_VARARGS,
     "drain_relays(fds, routes, now) -> (misses as (fd, data, peer), forwarded, "
     "recv_errors, send_errors, send_dropped, gso_sends, gso_segments, gso_refused, more)"},
    {"binding_answer", binding_answer, METH_VARARGS,
     "binding_answer(data, host, port, tail, mapped) -> bytes | None"},
    {"listener_decision", listener_decision, METH_VARARGS,
     "listener_decision(data, host, port, tail, mapped, routes, fd, now)"},
    {"relay_decision", relay_decision, METH_VARARGS,
     "relay_decision(data, host, port, routes, fd, now) -> bytes | None"},
    {"route_key", route_key, METH_VARARGS, "route_key(fd, host, port, channel) -> bytes"},
    {"set_gso", set_gso, METH_O,
     "set_gso(on) -> bool: use UDP GSO for runs to one destination (if the kernel has "
     "UDP_SEGMENT), forgetting earlier refusals; whether it is on"},
    {"gso_enabled", gso_enabled, METH_O,
     "gso_enabled(fd) -> bool: whether sends from this socket may use UDP GSO"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "natsrv._fastpath",
    "The optional native data path: batched I/O, plain Binding answers, table forwarding.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    crc_init();
    if (PyType_Ready(&RouteType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&RouteType);
    if (PyModule_AddObject(m, "Route", (PyObject *)&RouteType) < 0
        || PyModule_AddIntConstant(m, "BATCH", BATCH) < 0
        || PyModule_AddIntConstant(m, "ROUNDS", ROUNDS) < 0
        || PyModule_AddIntConstant(m, "MAX_TAIL", MAX_TAIL) < 0
        || PyModule_AddIntConstant(m, "GSO_MAX_SEGMENTS", GSO_MAX_SEGMENTS) < 0
        || PyModule_AddIntConstant(m, "GSO_MIN_RUN", GSO_MIN_RUN) < 0) {
        Py_DECREF(&RouteType); Py_DECREF(m);
        return NULL;
    }
    return m;
}
