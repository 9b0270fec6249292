/*
 * vcpucount: a TCG plugin that counts each vCPU's own instructions and logs
 * them at chosen TSC reads, so a span between two stamps can be split into
 * the measured pCPU's own work and the slices the other vCPUs ran inside it.
 *
 * Under -icount shift=0 with single-threaded TCG the guest TSC advances with
 * the instructions of every vCPU (round robin), plus the skips of idle time
 * (sleep=off).  This plugin keeps:
 *   total      instructions of all vCPUs so far (an inline add per instruction);
 *   own[v]     the part of total vCPU v executed (attributed when the round
 *              robin switches vCPU, seen at the start of each block).
 * At every rdtsc/rdtscp whose address lies in a site range, executed by the
 * watched vCPU, it appends one record to the log:
 *   struct { u64 total; u64 own; u64 pc; u32 site; u32 vcpu; }  (32 bytes, LE)
 * total and own as they were before the rdtsc.  The host aligns these records
 * with the TSC values the stamps read (orchestrator/vcpucount.py).
 *
 * Arguments (-plugin file=vcpucount.so,out=PATH,vcpu=N,site=LO:HI,...):
 *   out=PATH     the record log (required)
 *   vcpu=N       log only the reads of vCPU N (default: every vCPU)
 *   site=LO:HI   a guest-virtual address range [LO, HI) in hex, up to 8;
 *                the record's site is its position in the argument list;
 *                every TSC read in it is instrumented at translation
 *   site=LO:HI:off  the same, logging nothing until the control file narrows it
 *   ctl=PATH     a control file, read every 100 ms: lines `K LO HI` set the
 *                part of site K that logs (for a guest kernel, whose symbols
 *                are known only once it runs: no retranslation needed); a
 *                line `out PATH` moves the log to a new file (one per
 *                measurement of a machine that several runs measure)
 *                a line `gate GEN STEP` (GEN new) opens the gate below
 *   gate=OUT:IN  two FIFOs: the gate (instruction pacing, orchestrator/pacing.py).  Once
 *                opened, at the first block after every STEP instructions of the
 *                vCPUs other than vcpu=N (of all vCPUs without vcpu=), the vCPU
 *                thread writes {u64 gate number, u64 those instructions so far} to
 *                OUT and waits for a u64 on IN: 0 go on, 1 go on with the gate closed.
 *                The measured pCPU's instructions do not count, so whether it idles
 *                or busy-loops (idle avoidance) does not change when the frames come.
 *                Guest time stands still meanwhile (instructions are its clock),
 *                while QEMU's main loop takes the host's frames in: they enter the
 *                guest at the same instruction, however slow the host was.
 * At exit the log ends with one record per vCPU: site 0xffffffff, pc 0,
 * total, own = that vCPU's instructions over the whole run.
 *
 * Built against qemu-plugin.h of Debian's qemu source (images/build-vcpu-plugin.sh).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_VCPUS 64
#define MAX_SITES 8
#define SITE_TOTALS 0xffffffffu

struct record {
    uint64_t total, own, pc;
    uint32_t site, vcpu;
};

struct site_insn { /* udata of one instrumented rdtsc (never freed: blocks are retranslated rarely) */
    uint64_t pc;
    uint32_t site;
};

static uint64_t total;            /* inline-incremented before every instruction */
static uint64_t own[MAX_VCPUS];
static uint64_t mark;             /* total when vCPU cur took over */
static unsigned cur;
static int watch = -1;
static uint64_t site_lo[MAX_SITES], site_hi[MAX_SITES];
static volatile uint64_t log_lo[MAX_SITES], log_hi[MAX_SITES]; /* the part that logs */
static int n_sites;
static const char *ctl_path;
static char out_path[4097];
static FILE *out;
/* The host reads the log while QEMU still runs (after each measurement): a
 * thread flushes it every 100 ms, so no record waits in the buffer for long. */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int quitting;
static int gate_out = -1, gate_in = -1;
static volatile uint64_t gate_pending; /* STEP set by the control file, taken up by the vCPU thread */
static uint64_t gate_gen, gate_step, gate_next, gate_count;

/* Single-threaded TCG: callbacks never run concurrently, so no locking. */
static void attribute(unsigned vcpu)
{
    if (vcpu != cur) {
        if (cur < MAX_VCPUS)
            own[cur] += total - mark;
        mark = total;
        cur = vcpu;
    }
}

static int full_io(int fd, void *buf, size_t n, int writing)
{
    for (size_t done = 0; done < n;) {
        ssize_t r = writing ? write(fd, (char *)buf + done, n - done) : read(fd, (char *)buf + done, n - done);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += r;
    }
    return 0;
}

/* The gate's clock: instructions of the vCPUs other than the watched one (call after attribute()). */
static uint64_t gate_clock(void)
{
    if (watch < 0 || watch >= MAX_VCPUS)
        return total;
    return total - own[watch] - (cur == (unsigned)watch ? total - mark : 0);
}

static void gate(void)
{
    uint64_t msg[2] = { gate_count++, gate_clock() }, answer = 1;

    if (full_io(gate_out, msg, sizeof(msg), 1) || full_io(gate_in, &answer, sizeof(answer), 0))
        answer = 1; /* nobody at the other end: never hang the guest */
    if (answer == 1)
        gate_step = 0;
    gate_next += gate_step;
}

static void on_block(unsigned int vcpu, void *udata)
{
    attribute(vcpu);
    if (gate_pending) {
        gate_step = gate_pending == UINT64_MAX ? 0 : gate_pending;
        gate_next = gate_clock() + gate_step;
        gate_count = 0;
        gate_pending = 0;
    }
    if (gate_step && gate_clock() >= gate_next)
        gate();
}

static void on_site(unsigned int vcpu, void *udata)
{
    const struct site_insn *s = udata;
    struct record r;

    attribute(vcpu);
    if (watch >= 0 && (int)vcpu != watch)
        return;
    if (s->pc < log_lo[s->site] || s->pc >= log_hi[s->site])
        return;
    r.total = total;
    r.own = (vcpu < MAX_VCPUS ? own[vcpu] : 0) + (total - mark);
    r.pc = s->pc;
    r.site = s->site;
    r.vcpu = vcpu;
    pthread_mutex_lock(&out_lock);
    fwrite(&r, sizeof(r), 1, out);
    pthread_mutex_unlock(&out_lock);
}

static int is_tsc_read(const uint8_t *b, size_t n)
{
    return (n >= 2 && b[0] == 0x0f && b[1] == 0x31) ||                  /* rdtsc */
           (n >= 3 && b[0] == 0x0f && b[1] == 0x01 && b[2] == 0xf9);     /* rdtscp */
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);

    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS, NULL);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);

        for (int k = 0; k < n_sites; k++) {
            if (pc >= site_lo[k] && pc < site_hi[k] &&
                is_tsc_read(qemu_plugin_insn_data(insn), qemu_plugin_insn_size(insn))) {
                struct site_insn *s = malloc(sizeof(*s));

                s->pc = pc;
                s->site = k;
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_site, QEMU_PLUGIN_CB_NO_REGS, s);
                break;
            }
        }
        /* after the site callback, so a record's total excludes the rdtsc itself */
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &total, 1);
    }
}

static void reopen(const char *path)
{
    FILE *f;

    if (!strcmp(path, out_path) || !(f = fopen(path, "wb")))
        return; /* the same file, or one that cannot be written: keep logging where we were */
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    pthread_mutex_lock(&out_lock);
    fclose(out);
    out = f;
    snprintf(out_path, sizeof(out_path), "%s", path);
    pthread_mutex_unlock(&out_lock);
}

static void read_ctl(void)
{
    FILE *f = fopen(ctl_path, "r");
    char line[4200], path[4097];
    unsigned k;
    uint64_t lo, hi, gen;

    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "gate %" SCNu64 " %" SCNu64, &gen, &lo) == 2) {
            if (gen != gate_gen && gate_out >= 0) {
                gate_gen = gen;
                gate_pending = lo ? lo : UINT64_MAX;
            }
        } else if (sscanf(line, "out %4096s", path) == 1) {
            reopen(path);
        } else if (sscanf(line, "%u %" SCNx64 " %" SCNx64, &k, &lo, &hi) == 3 && k < (unsigned)n_sites) {
            log_lo[k] = lo;
            log_hi[k] = hi;
        }
    }
    fclose(f);
}

static void *flusher(void *arg)
{
    while (!quitting) {
        usleep(100 * 1000);
        if (ctl_path)
            read_ctl();
        pthread_mutex_lock(&out_lock);
        fflush(out);
        pthread_mutex_unlock(&out_lock);
    }
    return NULL;
}

static void on_quit(qemu_plugin_id_t id, void *p)
{
    attribute(MAX_VCPUS); /* close the running vCPU's share */
    pthread_mutex_lock(&out_lock);
    quitting = 1;
    for (unsigned v = 0; v < MAX_VCPUS; v++) {
        struct record r = { total, own[v], 0, SITE_TOTALS, v };

        if (own[v])
            fwrite(&r, sizeof(r), 1, out);
    }
    fflush(out);
    pthread_mutex_unlock(&out_lock);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;

    for (int i = 0; i < argc; i++) {
        char *v = strchr(argv[i], '=');

        if (!v) {
            fprintf(stderr, "vcpucount: argument '%s' is not key=value\n", argv[i]);
            return -1;
        }
        *v++ = '\0';
        if (!strcmp(argv[i], "out")) {
            path = v;
        } else if (!strcmp(argv[i], "vcpu")) {
            watch = atoi(v);
        } else if (!strcmp(argv[i], "ctl")) {
            ctl_path = v;
        } else if (!strcmp(argv[i], "gate") && strchr(v, ':')) {
            char *in = strchr(v, ':');

            *in++ = '\0';
            /* O_RDWR: a FIFO opens at once, with or without a reader yet */
            if ((gate_out = open(v, O_RDWR)) < 0 || (gate_in = open(in, O_RDWR)) < 0) {
                fprintf(stderr, "vcpucount: cannot open the gate FIFOs %s, %s\n", v, in);
                return -1;
            }
        } else if (!strcmp(argv[i], "site") && n_sites < MAX_SITES &&
                   sscanf(v, "%" SCNx64 ":%" SCNx64, &site_lo[n_sites], &site_hi[n_sites]) == 2) {
            int off = strstr(v, ":off") != NULL;

            log_lo[n_sites] = off ? 0 : site_lo[n_sites];
            log_hi[n_sites] = off ? 0 : site_hi[n_sites];
            n_sites++;
        } else {
            fprintf(stderr, "vcpucount: bad argument %s=%s\n", argv[i], v);
            return -1;
        }
    }
    if (!path || !(out = fopen(path, "wb"))) {
        fprintf(stderr, "vcpucount: cannot write the log (out=%s)\n", path ? path : "?");
        return -1;
    }
    snprintf(out_path, sizeof(out_path), "%s", path);
    setvbuf(out, NULL, _IOFBF, 1 << 20);
    if (info->system_emulation && info->system.max_vcpus > MAX_VCPUS) {
        fprintf(stderr, "vcpucount: %d vCPUs, at most %d\n", info->system.max_vcpus, MAX_VCPUS);
        return -1;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, flusher, NULL)) {
        fprintf(stderr, "vcpucount: cannot start the flushing thread\n");
        return -1;
    }
    pthread_detach(t);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_quit, NULL);
    return 0;
}
