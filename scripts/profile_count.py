#!/usr/bin/env python3
"""Instructions and locked read-modify-writes in a callgrind profile (`--dump-instr=yes
--compress-pos=no --compress-strings=no`) of the given binary: prints `<instructions> <locked>`.
With a third argument, a function name's ending, the instructions are those spent inside the
calls of that function (their inclusive cost), not the whole profile's.

Locked RMWs are the executions of `lock`-prefixed instructions and of `xchg` with a memory
operand (implicitly locked) in the binary itself (the crate, std's atomics and the harness are all
inlined there; libc's own locks are not counted)."""
import re
import subprocess
import sys


def locked_addresses(binary):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary],
                         capture_output=True, text=True, check=True).stdout
    addrs = set()
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)$", line)
        if not m:
            continue
        insn = m.group(2)
        if insn.startswith("lock ") or (insn.startswith("xchg") and "(" in insn):
            addrs.add(int(m.group(1), 16))
    return addrs


def symbols(binary):
    """Demangled function name -> address, for names the binary defines once."""
    out = subprocess.run(["nm", "-C", binary], capture_output=True, text=True, check=True).stdout
    seen = {}
    for line in out.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) == 3 and parts[1] in "tT":
            seen.setdefault(parts[2], []).append(int(parts[0], 16))
    return {name: addrs[0] for name, addrs in seen.items() if len(addrs) == 1}


def load_offset(binary, entries):
    """Where the profile's addresses sit against the binary's: from the lowest executed
    address of functions the binary defines once (`main` first; a thread other than the main
    one never runs it), the most common difference."""
    known = symbols(binary)
    if "main" in entries and "main" in known:
        return entries["main"] - known["main"]
    diffs = {}
    for name, addr in entries.items():
        if name in known:
            diff = addr - known[name]
            diffs[diff] = diffs.get(diff, 0) + 1
    if not diffs:
        raise SystemExit(f"no function of the profile found in {binary}")
    return max(diffs, key=diffs.get)


def main():
    profile, binary = sys.argv[1], sys.argv[2]
    inside = sys.argv[3] if len(sys.argv) > 3 else None
    locked = locked_addresses(binary)
    total = 0
    called = 0
    cfn = None
    costs = {}
    ob = fn = None
    skip = False
    entries = {}
    npos = 1
    for line in open(profile):
        if line.startswith("positions:"):
            npos = len(line.split()) - 1
        elif line.startswith("summary:") or line.startswith("totals:"):
            total = int(line.split()[1])
        elif line.startswith("ob="):
            ob = line[3:].strip()
        elif line.startswith("fn="):
            fn = line[3:].strip()
        elif line.startswith("cfn="):
            cfn = line[4:].strip()
        elif line.startswith("calls="):
            skip = True
        elif line.startswith("0x"):
            if skip:
                # The call's line: its inclusive cost.
                skip = False
                fields = line.split()
                if inside and cfn and cfn.endswith(inside) and len(fields) > npos:
                    called += int(fields[npos])
                continue
            fields = line.split()
            addr, cost = int(fields[0], 16), fields[npos] if len(fields) > npos else "0"
            if ob == binary:
                costs[addr] = costs.get(addr, 0) + int(cost)
                if addr < entries.get(fn, addr + 1):
                    entries[fn] = addr
    offset = load_offset(binary, entries)
    rmw = sum(c for a, c in costs.items() if a - offset in locked)
    print(called if inside else total, rmw)


main()
