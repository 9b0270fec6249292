/*
 * icsstorm: make the RT guest's e1000e fire nonstop, from inside the guest.
 *
 *   icsstorm PHYS_HEX WRITES VALUE_HEX  ->  ICSSTORM writes=<n> ticks=<ticks> start=<tsc>
 *
 * Writes VALUE (an interrupt cause, e.g. 0x00100000 = RXQ0) WRITES times to the
 * 32-bit register at physical address PHYS (the device's ICS, BAR0 + 0xC8):
 * each write asks the device for an interrupt, which the guest's own handler
 * takes in between.  This is the storm a misbehaving guest can make; the run
 * checks the RT pCPU still answers afterwards.  Needs /dev/mem access to the
 * BAR (the guest boots with iomem=relaxed for that).
 *
 * Freestanding (no libc): a static binary of a few kB for the busybox initramfs.
 */
#include "freestanding.h"

static void __attribute__((noreturn)) fail(const char *what, long err)
{
    char out[128], *p = out;
    p = put_field(put_str(put_str(p, "ICSSTORM-ERROR "), what), " errno=", (u64)-err);
    write_and_exit(out, put_str(p, "\n"), 2);
}

void __attribute__((noreturn, used)) icsstorm_main(long argc, char **argv)
{
    char out[128], *p = out;
    if (argc != 4)
        fail("usage: icsstorm PHYS_HEX WRITES VALUE_HEX", -22);
    u64 phys = parse(argv[1], 16), writes = parse(argv[2], 10);
    u32 value = (u32)parse(argv[3], 16);
    long fd = sys6(2, (long)"/dev/mem", 02 | 04010000 /* O_RDWR | O_SYNC */, 0, 0, 0, 0);
    if (fd < 0)
        fail("open /dev/mem", fd);
    long map = sys6(9, 0, 4096, 3 /* PROT_READ | PROT_WRITE */, 1 /* MAP_SHARED */, fd, (long)(phys & ~0xfffUL));
    if (map < 0 && map > -4096)
        fail("mmap", map);
    volatile u32 *reg = (volatile u32 *)(map + (long)(phys & 0xfff));
    u64 t0 = tsc();
    for (u64 i = 0; i < writes; i++)
        *reg = value;
    u64 t1 = tsc();
    p = put_field(put_str(p, "ICSSTORM"), " writes=", writes);
    p = put_field(p, " ticks=", t1 - t0);
    p = put_field(p, " start=", t0);
    write_and_exit(out, put_str(p, "\n"), 0);
}

FREESTANDING_START(icsstorm_main);
