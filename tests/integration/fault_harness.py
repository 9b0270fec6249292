"""`python -m tests.integration.fault_harness GUEST_FAULT -- ORCHESTRATOR ARGS...`: the real
`testbed` CLI, with at most one fault made inside the guests right after the measurement's probes
start (the traffic follows). The faults from outside (signals, QMP, a full folder) need no hook:
test_faults.py makes them from the host. GUEST_FAULT is `-` for none, or one of GUEST_FAULTS.

The hook only adds one action to the real stage; nothing else of the run is replaced."""

import sys

from orchestrator import cli, measure


def _rt_guest_panic(agent, rt):
    rt.send("echo c > /proc/sysrq-trigger")  # the RT guest's own kernel panics (sysrq c)


def _dom0_agent_killed(agent, rt):
    # Detached, so this command itself still returns; every later agent call then fails.
    agent.run("(sleep 1; kill -9 $(pidof qemu-ga)) >/dev/null 2>&1 &", timeout=30)


GUEST_FAULTS = {"rt-guest-panic": _rt_guest_panic, "dom0-agent-killed": _dom0_agent_killed}


def install(name):
    fault = GUEST_FAULTS[name]
    real = measure.start_probes

    def start_probes_then_fault(agent, rt, s, rec):
        pid = real(agent, rt, s, rec)
        print(f"FAULT-HARNESS injecting {name}", flush=True)
        fault(agent, rt)
        return pid

    measure.start_probes = start_probes_then_fault


def main(argv):
    if len(argv) < 2 or argv[1] != "--" or (argv[0] != "-" and argv[0] not in GUEST_FAULTS):
        sys.exit(f"usage: fault_harness.py -|{'|'.join(GUEST_FAULTS)} -- ORCHESTRATOR ARGS...")
    if argv[0] != "-":
        install(argv[0])
    return cli.main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
