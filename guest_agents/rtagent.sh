#!/bin/sh
# rtagent: the RT guest's interrupt-entry stamps (ftrace), driven by one-line
# commands typed into the guest's console shell. Installed as /bin/rtagent in
# the guest initramfs (busybox sh). Every reply line starts with RTAGENT-;
# lines are short, plain ASCII, no colours. Kernel messages are kept off the
# console (printk console level 1) from start to stop and during a dump.
#
#   rtagent start [--upcall] [IFACE]
#                   mount tracefs, trace_clock x86-tsc, ring buffer
#                   RTAGENT_BUF_KB per CPU (default 16384 kB: > 200k events),
#                   enable irq:irq_handler_entry filtered to the measured NIC's
#                   IRQs (/proc/interrupts names IFACE and IFACE-*; IFACE
#                   default: the interface driven by e1000e), with --upcall
#                   also a kprobe event at the event-channel upcall
#                   (xen_evtchn_do_upcall), clear the buffer, tracing_on.
#                   -> RTAGENT-STARTED irqs=<irq>:<name>,... upcall=<event|none> buffer_kb=<n>
#   rtagent stop    tracing_off
#                   -> RTAGENT-STOPPED entries=<n> overrun=<n> dropped=<n>
#                      and the RTAGENT-COUNTERS line
#   rtagent dump [--gzip|--frames]
#                   -> RTAGENT-DUMP-BEGIN, our trace lines as ftrace prints them
#                      (x86-tsc timestamps; IRQ entries and every upcall line),
#                      RTAGENT-DUMP-END lines=<n>; with --gzip the lines come
#                      gzipped and base64-encoded after
#                      RTAGENT-DUMP-BEGIN gzip+base64 bytes=<uncompressed bytes>;
#                      with --frames ftrace's whole text (headers included)
#                      leaves as raw frames on the measured NIC (/bin/framesend)
#                      and the console shows only RTAGENT-DUMP-BEGIN frames
#                      bytes=<n>, FRAMESEND frames=.. and the END line
#   rtagent counters
#                   -> RTAGENT-COUNTERS if=<iface> rx_packets=.. rx_dropped=..
#                      rx_missed_errors=.. rx_fifo_errors=.. rx_errors=..
#                      irq<N>=<count> ... (/proc/interrupts, the NIC's IRQs)
#   rtagent irqs    -> RTAGENT-IRQS if=<iface> <irq>:<name>:<msi|msix|intx> ...
#   rtagent sysinfo -> /proc/interrupts, PCI devices with driver, MSI/MSI-X
#                      capability state from config space (lspci-like
#                      "MSI: Enable+"), the NIC's counters, RTAGENT-SYSINFO-END
#   rtagent status  -> RTAGENT-STATUS tracing_on=.. clock=.. entries=..
#   rtagent calibrate [N] [TRIALS]
#                   /bin/tsccal: a loop of exactly 2N instructions between two
#                   TSC reads, and the reads alone, each the minimum of TRIALS
#                   runs (default N=200000, TRIALS=30)
#                   -> RTAGENT-CALIBRATE n=<2N> base=<ticks> loop=<ticks>
# Errors: RTAGENT-ERROR <text>, exit status 1.
# State: /run/rtagent.state (interface, IRQ list, upcall event, saved printk level).

PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH
T=/sys/kernel/tracing
STATE=/run/rtagent.state
UPCALL_FUNCS="xen_evtchn_do_upcall __xen_evtchn_do_upcall xen_pv_evtchn_do_upcall"

err() { echo "RTAGENT-ERROR $*"; exit 1; }

tracefs() {
    [ -e $T/trace ] && return 0
    mkdir -p $T 2>/dev/null
    mount -t tracefs nodev $T 2>/dev/null && [ -e $T/trace ] && return 0
    # Older layout: tracefs under debugfs.
    mkdir -p /sys/kernel/debug
    grep -q " /sys/kernel/debug " /proc/mounts || mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
    if [ -e /sys/kernel/debug/tracing/trace ]; then T=/sys/kernel/debug/tracing; return 0; fi
    err "no tracefs (mount -t tracefs failed)"
}

# The measured interface: RTAGENT_IF, else the first one driven by e1000e,
# else the first PCI network interface.
find_if() {
    [ -n "$1" ] && { echo "$1"; return 0; }
    [ -n "$RTAGENT_IF" ] && { echo "$RTAGENT_IF"; return 0; }
    for n in /sys/class/net/*; do
        [ -e "$n/device/driver" ] || continue
        case "$(readlink "$n/device/driver")" in */e1000e) echo "${n##*/}"; return 0 ;; esac
    done
    for n in /sys/class/net/*; do
        [ -e "$n/device" ] && { echo "${n##*/}"; return 0; }
    done
    return 1
}

# irq_lines IFACE -> "irq name" for each /proc/interrupts line whose name is
# IFACE or IFACE-<queue> (e1000e: eth0-rx-0, eth0-tx-0, eth0).
irq_lines() {
    awk -v ifc="$1" '
        $1 ~ /^[0-9]+:$/ {
            name = $NF
            if (name == ifc || index(name, ifc "-") == 1) { sub(":", "", $1); print $1, name }
        }' /proc/interrupts
}

# irq_mode IRQ -> msi | msix | intx (from the device's msi_irqs/)
irq_mode() {
    f=$(ls /sys/bus/pci/devices/*/msi_irqs/"$1" 2>/dev/null | head -n 1)
    if [ -n "$f" ]; then cat "$f"; else echo intx; fi
}

save_state() { # key value
    [ -f $STATE ] && grep -v "^$1=" $STATE >$STATE.new; mv -f $STATE.new $STATE 2>/dev/null
    echo "$1=$2" >>$STATE
}
get_state() { [ -f $STATE ] && sed -n "s/^$1=//p" $STATE | tail -n 1; }

quiet_console() { # keep kernel messages off the console while we print
    lvl=$(awk '{print $1}' /proc/sys/kernel/printk)
    [ -n "$(get_state loglevel)" ] || save_state loglevel "$lvl"
    echo 1 >/proc/sys/kernel/printk
}
restore_console() {
    lvl=$(get_state loglevel)
    [ -n "$lvl" ] && echo "$lvl" >/proc/sys/kernel/printk
    save_state loglevel ""
}

cpu_stats() { # -> entries overrun dropped, summed over CPUs
    awk -F: '
        $1 == "entries" { e += $2 }
        $1 == "overrun" { o += $2 }
        $1 == "dropped events" { d += $2 }
        END { printf "entries=%d overrun=%d dropped=%d\n", e, o, d }' $T/per_cpu/cpu*/stats
}

upcall_setup() { # -> the event name, or none
    for f in $UPCALL_FUNCS; do
        grep -q " $f\$" /proc/kallsyms 2>/dev/null || continue
        ev=$f
        if [ ! -d $T/events/kprobes/$ev ]; then
            echo "p:$ev $f" >>$T/kprobe_events 2>/dev/null || continue
        fi
        [ -d $T/events/kprobes/$ev ] || continue
        echo 1 >$T/events/kprobes/$ev/enable 2>/dev/null || continue
        echo "$ev"
        return
    done
    echo none
}

counters() {
    ifc=$(get_state if)
    [ -n "$ifc" ] || ifc=$(find_if "") || err "no network interface"
    s=/sys/class/net/$ifc/statistics
    line="RTAGENT-COUNTERS if=$ifc"
    for k in rx_packets rx_dropped rx_missed_errors rx_fifo_errors rx_errors; do
        v=$(cat $s/$k 2>/dev/null || echo NA)
        line="$line $k=$v"
    done
    for l in $(irq_lines "$ifc" | awk '{print $1}'); do
        c=$(awk -v i="$l:" '$1 == i { n = 0; for (k = 2; k <= NF && $k ~ /^[0-9]+$/; k++) n += $k; print n }' /proc/interrupts)
        line="$line irq$l=$c"
    done
    echo "$line"
}

cmd_start() {
    want_upcall=0
    while [ $# -gt 0 ]; do
        case "$1" in
        --upcall) want_upcall=1 ;;
        --no-upcall) want_upcall=0 ;;
        -*) err "unknown option $1" ;;
        *) break ;;
        esac
        shift
    done
    tracefs
    ifc=$(find_if "$1") || err "no network interface for the measured NIC"
    [ -e /sys/class/net/$ifc ] || err "no interface $ifc"
    irqs=$(irq_lines "$ifc")
    [ -n "$irqs" ] || err "no IRQ named $ifc or $ifc-* in /proc/interrupts (interface down?)"
    quiet_console
    echo 0 >$T/tracing_on
    echo nop >$T/current_tracer
    echo 0 >$T/events/enable
    echo x86-tsc >$T/trace_clock || err "trace_clock x86-tsc not available: $(cat $T/trace_clock)"
    # No latency-format flags column: shorter lines (parse_ftrace takes both).
    echo 0 >$T/options/irq-info 2>/dev/null
    echo 0 >$T/options/record-tgid 2>/dev/null
    echo "${RTAGENT_BUF_KB:-16384}" >$T/buffer_size_kb || err "cannot size the ring buffer to ${RTAGENT_BUF_KB:-16384} kB"
    filter=$(echo "$irqs" | awk '{ printf "%sirq==%s", (NR > 1 ? " || " : ""), $1 }')
    E=$T/events/irq/irq_handler_entry
    [ -d $E ] || err "no irq:irq_handler_entry event"
    echo "$filter" >$E/filter || err "bad filter: $filter"
    echo 1 >$E/enable || err "cannot enable irq:irq_handler_entry"
    up=none
    [ $want_upcall = 1 ] && up=$(upcall_setup)
    echo >$T/trace
    save_state if "$ifc"
    save_state irqs "$(echo "$irqs" | tr ' ' ':' | tr '\n' ',' | sed 's/,$//')"
    save_state upcall "$up"
    echo 1 >$T/tracing_on
    echo "RTAGENT-STARTED irqs=$(get_state irqs) upcall=$up buffer_kb=$(cat $T/buffer_size_kb)"
}

cmd_stop() {
    tracefs
    echo 0 >$T/tracing_on
    echo "RTAGENT-STOPPED $(cpu_stats)"
    counters
    restore_console
}

cmd_dump() {
    tracefs
    quiet_console
    if [ "$1" = "--frames" ]; then
        # Raw frames on the measured NIC, to the host's end of its netdev: ftrace's own text as the
        # kernel formats it (only our two events are enabled; the host skips the header lines
        # and counts the rest), no copy and no pass of a shell tool over it.
        echo "RTAGENT-DUMP-BEGIN frames"
        /bin/framesend "$(get_state if)" $T/trace
        echo "RTAGENT-DUMP-END lines=-"
        restore_console
        return
    fi
    : >/tmp/rtagent.dump
    # Our events only: IRQ entries (the filter already picked the IRQs) and every
    # upcall stamp (the host aligns each TSC read of the ftrace clock with the vCPU
    # plugin's records, so none may be left out). Header lines dropped.
    n=$(awk -v up="$(get_state upcall)" -v out=/tmp/rtagent.dump '
        /^#/ { next }
        {
            if (match($0, /\[[0-9]+\]/) == 0) next
            if (index($0, ": irq_handler_entry: ") || (up != "none" && up != "" && index($0, " " up ": "))) {
                print > out; n++
            }
        }
        END { print n + 0 }' $T/trace)
    if [ "$1" = "--gzip" ]; then  # the console is the slow part: about a tenth of the bytes cross it
        echo "RTAGENT-DUMP-BEGIN gzip+base64 bytes=$(wc -c </tmp/rtagent.dump)"
        gzip -c /tmp/rtagent.dump | base64
    else
        echo "RTAGENT-DUMP-BEGIN"
        cat /tmp/rtagent.dump
    fi
    rm -f /tmp/rtagent.dump
    echo "RTAGENT-DUMP-END lines=$n"
    restore_console
}

cmd_irqs() {
    ifc=$(get_state if)
    [ -n "$ifc" ] || ifc=$(find_if "$1") || err "no network interface"
    line="RTAGENT-IRQS if=$ifc"
    for l in $(irq_lines "$ifc" | tr ' ' ':'); do
        line="$line $l:$(irq_mode "${l%%:*}")"
    done
    echo "$line"
}

# pci_caps BDF: MSI / MSI-X capability state from config space, lspci style.
pci_caps() {
    hexdump -v -e '1/1 "%u\n"' "/sys/bus/pci/devices/$1/config" 2>/dev/null | awk -v bdf="$1" '
        function pow2(k,  r) { r = 1; while (k-- > 0) r *= 2; return r }
        { b[NR - 1] = $1 }
        END {
            if (!(6 in b) || !and(b[6], 16)) { print "  no capability list"; exit }
            p = b[52]; n = 0
            while (p >= 64 && p < 256 && n++ < 48) {
                id = b[p]; ctl = b[p + 2] + 256 * b[p + 3]
                if (id == 5)
                    printf "  MSI: Enable%s Count=%d/%d Maskable%s 64bit%s\n", and(ctl, 1) ? "+" : "-",
                        pow2(int(and(ctl, 112) / 16)), pow2(int(and(ctl, 14) / 2)),
                        and(ctl, 256) ? "+" : "-", and(ctl, 128) ? "+" : "-"
                if (id == 17)
                    printf "  MSI-X: Enable%s Count=%d Masked%s\n", and(ctl, 32768) ? "+" : "-",
                        and(ctl, 2047) + 1, and(ctl, 16384) ? "+" : "-"
                p = b[p + 1]
            }
        }'
}

cmd_sysinfo() {
    echo "RTAGENT-SYSINFO-BEGIN"
    cat /proc/interrupts
    for d in /sys/bus/pci/devices/*; do
        [ -e "$d" ] || continue
        bdf=${d##*/}
        drv=none
        [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
        echo "pci $bdf $(cat "$d/vendor"):$(cat "$d/device") driver=$drv"
        for m in "$d"/msi_irqs/*; do
            [ -e "$m" ] && echo "  msi_irq ${m##*/} $(cat "$m")"
        done
        pci_caps "$bdf"
    done
    counters
    echo "RTAGENT-SYSINFO-END"
}

cmd_status() {
    tracefs
    clk=$(sed 's/.*\[\(.*\)\].*/\1/' $T/trace_clock)
    echo "RTAGENT-STATUS tracing_on=$(cat $T/tracing_on) clock=$clk $(cpu_stats)"
}

cmd_calibrate() {
    out=$(/bin/tsccal "${1:-200000}" "${2:-30}") || err "tsccal failed: $out"
    echo "RTAGENT-CALIBRATE ${out#TSCCAL }"
}

case "$1" in
calibrate) shift; cmd_calibrate "$@" ;;
start) shift; cmd_start "$@" ;;
stop) cmd_stop ;;
dump) shift; cmd_dump "$@" ;;
counters) counters ;;
irqs) shift; cmd_irqs "$@" ;;
sysinfo) cmd_sysinfo ;;
status) cmd_status ;;
*) echo "RTAGENT-ERROR usage: rtagent start [--upcall] [IFACE]|stop|dump|counters|irqs|sysinfo|status|calibrate [N] [TRIALS]"; exit 1 ;;
esac
