/*
 * What the freestanding guest tools (tsccal, icsstorm) share: no libc in the
 * busybox initramfs, so raw syscalls, an ordered TSC read, number parsing and
 * output into a buffer.
 */
typedef unsigned long u64;
typedef unsigned int u32;

static inline u64 tsc(void)
{
    unsigned int lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return ((u64)hi << 32) | lo;
}

static long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* Digits of `base` (10 or 16, 0x allowed) up to the first other character. */
static u64 parse(const char *s, u64 base)
{
    u64 v = 0;
    if (base == 16 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    for (;; s++) {
        u64 d;
        if (*s >= '0' && *s <= '9')
            d = (u64)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (u64)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (u64)(*s - 'A' + 10);
        else
            return v;
        v = v * base + d;
    }
}

static char *put_num(char *p, u64 v)
{
    char buf[24];
    int i = 0;
    do { buf[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (i)
        *p++ = buf[--i];
    return p;
}

static char *put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

/* " key=<v>": one field of a result line. */
static char *put_field(char *p, const char *key, u64 v)
{
    return put_num(put_str(p, key), v);
}

/* Write the line out[0..p) to stdout and exit with `code`. */
static void __attribute__((noreturn)) write_and_exit(const char *out, const char *p, long code)
{
    sys6(1, 1, (long)out, p - out, 0, 0, 0);
    sys6(60, code, 0, 0, 0, 0, 0);
    __builtin_unreachable();
}

/* The kernel starts a static binary with argc at (%rsp), argv after it: call main(argc, argv). */
#define FREESTANDING_START(main) \
    __asm__(".globl _start\n_start:\n\tmov (%rsp), %rdi\n\tlea 8(%rsp), %rsi\n\tand $-16, %rsp\n\tcall " #main "\n")
