/*
 * framesend: copy a file off the RT guest as raw Ethernet frames on its own NIC.
 *
 *   framesend IFACE FILE   ->  FRAMESEND frames=<n> bytes=<n> retries=<n> read_ticks=<n> send_ticks=<n>
 *
 * The measured e1000e's other end is QEMU's socket netdev, which hands every
 * frame the guest transmits to a UDP socket on the host: a channel sized for
 * the records, where the console carries about 100 kB/s.  Each frame is
 * broadcast, EtherType 0x88b5 (IEEE local experimental), and carries
 *   "TBDUMP" | u32 seq | u32 frames | u32 bytes | u16 len | len bytes of FILE
 * (little endian); the host reassembles by seq and checks the counts.  A full
 * transmit queue (ENOBUFS) is waited out and the frame sent again.  FILE may
 * be tracefs's `trace`: it is read to its end first (the kernel formats it as
 * it is read); read_ticks and send_ticks are the TSC ticks (instructions,
 * under instruction timing) of the two phases.
 *
 * Freestanding (no libc), like tsccal and icsstorm.
 */
#include "freestanding.h"

#define ETHERTYPE 0x88b5
#define PAYLOAD 1400
#define HEADER (14 + 6 + 4 + 4 + 4 + 2)
#define MAX_FILE (32u << 20)
#define ENOBUFS 105
#define EAGAIN 11

/* gcc may turn the copy loops and the zeroed structs into these calls: no libc provides them here. */
void *memcpy(void *d, const void *s, unsigned long n)
{
    unsigned char *a = d;
    const unsigned char *b = s;
    while (n--)
        *a++ = *b++;
    return d;
}

void *memset(void *d, int c, unsigned long n)
{
    unsigned char *a = d;
    while (n--)
        *a++ = (unsigned char)c;
    return d;
}

static unsigned char file[MAX_FILE];
static unsigned char frame[HEADER + PAYLOAD];

struct ifreq_index { char name[16]; int index; char pad[20]; };
struct sockaddr_ll {
    unsigned short family, protocol;
    int ifindex;
    unsigned short hatype;
    unsigned char pkttype, halen, addr[8];
};
struct timespec { long sec, nsec; };

static void put32(unsigned char *p, u32 v)
{
    p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}

static void __attribute__((noreturn)) fail(const char *why)
{
    char out[160], *p = put_str(out, "FRAMESEND-ERROR ");
    p = put_str(p, why);
    *p++ = '\n';
    write_and_exit(out, p, 1);
}

int main(long argc, char **argv)
{
    struct ifreq_index ifr = {0};
    struct sockaddr_ll to = {0};
    struct timespec pause = {0, 200000};
    u64 size = 0, frames, retries = 0, t0, t1, t2;
    long fd, sock, n;
    char out[160], *p;
    int i;

    if (argc != 3)
        fail("usage: framesend IFACE FILE");
    for (i = 0; argv[1][i] && i < 15; i++)
        ifr.name[i] = argv[1][i];
    t0 = tsc();
    fd = sys6(2, (long)argv[2], 0, 0, 0, 0, 0); /* open O_RDONLY */
    if (fd < 0)
        fail("cannot open the file");
    while ((n = sys6(0, fd, (long)(file + size), MAX_FILE - size, 0, 0, 0)) > 0)
        size += (u64)n;
    if (n < 0 || size == MAX_FILE)
        fail("cannot read the file (or it is larger than 32 MB)");
    t1 = tsc();
    sock = sys6(41, 17, 3, (ETHERTYPE >> 8) | ((ETHERTYPE & 0xff) << 8), 0, 0, 0); /* AF_PACKET, SOCK_RAW */
    if (sock < 0)
        fail("no packet socket");
    if (sys6(16, sock, 0x8933, (long)&ifr, 0, 0, 0) < 0) /* SIOCGIFINDEX */
        fail("no such interface");
    to.family = 17;
    to.protocol = (ETHERTYPE >> 8) | ((ETHERTYPE & 0xff) << 8);
    to.ifindex = ifr.index;
    to.halen = 6;
    for (i = 0; i < 6; i++) {
        to.addr[i] = 0xff;
        frame[i] = 0xff;             /* broadcast: no neighbour to resolve */
        frame[6 + i] = i ? 0 : 0x02; /* a locally administered source */
    }
    frame[12] = ETHERTYPE >> 8;
    frame[13] = ETHERTYPE & 0xff;
    for (i = 0; i < 6; i++)
        frame[14 + i] = "TBDUMP"[i];
    frames = (size + PAYLOAD - 1) / PAYLOAD;
    put32(frame + 24, (u32)frames);
    put32(frame + 28, (u32)size);
    for (u64 seq = 0; seq < frames; seq++) {
        u64 off = seq * PAYLOAD, len = size - off < PAYLOAD ? size - off : PAYLOAD;
        put32(frame + 20, (u32)seq);
        frame[32] = len; frame[33] = len >> 8;
        for (u64 k = 0; k < len; k++)
            frame[HEADER + k] = file[off + k];
        while ((n = sys6(44, sock, (long)frame, HEADER + len, 0, (long)&to, sizeof(to))) < 0) {
            if (n != -ENOBUFS && n != -EAGAIN)
                fail("sendto failed");
            retries++;
            sys6(35, (long)&pause, 0, 0, 0, 0, 0); /* nanosleep: let the NIC drain its ring */
        }
    }
    t2 = tsc();
    p = put_str(out, "FRAMESEND");
    p = put_field(p, " frames=", frames);
    p = put_field(p, " bytes=", size);
    p = put_field(p, " retries=", retries);
    p = put_field(p, " read_ticks=", t1 - t0);
    p = put_field(p, " send_ticks=", t2 - t1);
    *p++ = '\n';
    write_and_exit(out, p, 0);
}

FREESTANDING_START(main);
