# shellcheck shell=bash
# Guest image helpers for shroud's migration captures (sourced).
#
# RAM filling: a file of seeded pseudo-random bytes (RAM - 17 MiB) is loaded
# at guest-physical 16 MiB by `-device loader,...,force-raw=on`; the tiny
# multiboot guest (scripts/guest/guest.c) fills the low RAM between its own
# end (~1.1 MiB) and 16 MiB, then keeps dirtying pages (a hot set rewritten on
# every timer tick plus a sweep at a configured byte rate) so that pre-copy
# needs several iterations. Without the guest (--guest none) the VM sits in
# SeaBIOS with no boot device and only the loader data is non-zero.

# guest_build OUT_ELF : compile scripts/guest/guest.c (gcc -m32, freestanding).
guest_build() {
    local out=$1 src="$SHROUD_SCRIPTS/guest"
    gcc -m32 -O2 -ffreestanding -fno-pic -fno-pie -no-pie -fno-stack-protector \
        -fno-asynchronous-unwind-tables -nostdlib -static -Wall -Wextra \
        -Wl,-T,"$src/link.ld" -Wl,--build-id=none -Wl,--no-warn-rwx-segments \
        -o "$out" "$src/guest.c" || die "cannot build the guest (gcc -m32 -ffreestanding)"
}

# guest_wait_ready SERIAL_LOG : wait (up to 30 s) for the tiny guest's ready
# line on its serial console, log it; die if it never comes.
guest_wait_ready() {
    local serial=$1 i
    for ((i = 0; i < 150; i++)); do
        grep -q 'shroud-guest: ready' "$serial" 2>/dev/null && break
        sleep 0.2
    done
    grep -q 'shroud-guest: ready' "$serial" ||
        die "guest did not boot (serial: $(head -c 300 "$serial" 2>/dev/null))"
    log "guest: $(grep -m1 'shroud-guest: ready' "$serial")"
}

# guest_ram_file OUT RAM_MIB SEED : seeded random bytes, RAM-17 MiB long.
guest_ram_file() {
    local out=$1 ram=$2 seed=$3
    ((ram >= 24)) || die "--ram must be at least 24 MiB"
    "${PYTHON:-python3}" - "$out" "$((ram - 17))" "$seed" <<'EOF'
import random, sys
out, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
with open(out, "wb") as f:
    for _ in range(mib):
        f.write(r.randbytes(1 << 20))
EOF
}
