/*
 * tsccal: prove what one TSC tick is, from inside the RT guest.
 *
 *   tsccal N TRIALS   ->  TSCCAL n=<2N> base=<ticks> loop=<ticks>
 *
 * Times, between two ordered TSC reads, a loop of exactly 2N instructions
 * (dec; jnz per iteration) and the same reads around an empty loop (N=0).
 * Each is the minimum over TRIALS: a trial that an interrupt or another vCPU's
 * slice ran into only reads more.  loop - base is the loop's length in ticks:
 * under QEMU's -icount shift=0 it must equal 2N (one tick per instruction).
 *
 * Freestanding (no libc): a static binary of a few kB for the busybox initramfs.
 */
#include "freestanding.h"

/* 2n instructions exactly when n > 0: the jnz falls through after n decrements. */
static u64 timed_loop(u64 n)
{
    u64 t0, t1;
    if (n == 0) {
        t0 = tsc();
        t1 = tsc();
        return t1 - t0;
    }
    t0 = tsc();
    __asm__ volatile("1: dec %0\n\tjnz 1b" : "+r"(n) :: "cc");
    t1 = tsc();
    return t1 - t0;
}

static u64 min_over(u64 n, u64 trials)
{
    u64 best = ~0UL;
    for (u64 i = 0; i < trials; i++) {
        u64 t = timed_loop(n);
        if (t < best)
            best = t;
    }
    return best;
}

void __attribute__((noreturn, used)) tsccal_main(long argc, char **argv)
{
    char out[128], *p = out;
    if (argc != 3) {
        p = put_str(p, "TSCCAL-ERROR usage: tsccal N TRIALS\n");
        write_and_exit(out, p, 2);
    }
    u64 n = parse(argv[1], 10), trials = parse(argv[2], 10);
    u64 base = min_over(0, trials), loop = min_over(n, trials);
    p = put_field(put_str(p, "TSCCAL"), " n=", 2 * n);
    p = put_field(p, " base=", base);
    p = put_field(p, " loop=", loop);
    write_and_exit(out, put_str(p, "\n"), 0);
}

FREESTANDING_START(tsccal_main);
