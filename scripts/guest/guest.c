/*
 * Tiny multiboot guest for shroud's migration captures.
 *
 * Loaded by QEMU with -kernel (multiboot, 32-bit protected mode, no paging).
 * It fills the low RAM between its own end and fill_end with seeded
 * pseudo-random data (the loader device fills the rest), then idles in
 * `hlt` and, on every PIT tick, dirties guest pages at a configured rate so
 * that QEMU's pre-copy needs several iterations:
 *   - a "hot" set of pages that is rewritten on every tick, and
 *   - a sweep over the data region at `dirty` bytes per second.
 * It prints progress lines on COM1 (a heartbeat every 2 s), which lets the
 * capture script check that the guest kept running on the destination.
 *
 * Kernel command line (key=value, all optional):
 *   seed=N      xorshift seed (default 1)
 *   dirty=BPS   sweep dirty rate in bytes per second (default 0)
 *   hot=N       number of hot pages rewritten every tick (default 0)
 *   base=ADDR   start of the dirtied region (default 0x1000000)
 *   fillend=A   fill low RAM with random data up to A (default 0x1000000)
 *   hz=N        PIT frequency (default 250)
 *   ip=A.B.C.D  answer ARP and ICMP echo (ping) at this address on the first
 *               RTL8139 NIC (QEMU -device rtl8139), polled on every tick, so
 *               that a prober can measure the downtime as the stealth-migration
 *               paper does (10 ms pings, lost x interval). No NIC: no network.
 *
 * Build: gcc -m32 -ffreestanding -nostdlib ... -T link.ld (see lib/guest.sh).
 */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define MB_MAGIC 0x1BADB002u
#define MB_FLAGS 0x00000003u

__attribute__((section(".multiboot"), used, aligned(4)))
static const u32 mb_header[3] = { MB_MAGIC, MB_FLAGS, (u32)(-(int)(MB_MAGIC + MB_FLAGS)) };

u8 stack[16384] __attribute__((aligned(16), used));
volatile u32 ticks;
extern char _end[];

void kmain(u32 magic, u32 *mbi);

__asm__(
    ".text\n"
    ".globl _start\n"
    "_start:\n"
    "  cli\n"
    "  movl $stack+16384, %esp\n"
    "  pushl %ebx\n"
    "  pushl %eax\n"
    "  call kmain\n"
    "1: cli\n"
    "  hlt\n"
    "  jmp 1b\n"
    ".globl isr_timer\n"
    "isr_timer:\n"
    "  pushl %eax\n"
    "  incl ticks\n"
    "  movb $0x20, %al\n"
    "  outb %al, $0x20\n"
    "  popl %eax\n"
    "  iret\n"
    ".globl isr_irq\n"
    "isr_irq:\n"
    "  iret\n"
    ".globl isr_fault\n"
    "isr_fault:\n"
    "  cli\n"
    "2: hlt\n"
    "  jmp 2b\n");

extern void isr_timer(void), isr_irq(void), isr_fault(void);

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc_(char c)
{
    for (int i = 0; i < 100000 && !(inb(0x3fd) & 0x20); i++)
        ;
    outb(0x3f8, (u8)c);
}
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void putu(u32 v)
{
    char b[12]; int n = 0;
    do { b[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) putc_(b[--n]);
}
static void puthex(u32 v)
{
    puts_("0x");
    for (int i = 28; i >= 0; i -= 4) putc_("0123456789abcdef"[(v >> i) & 15]);
}

static u32 rng;
static inline u32 xs32(void) { u32 x = rng; x ^= x << 13; x ^= x >> 17; x ^= x << 5; return rng = x; }

static u32 parse_num(const char *s)
{
    u32 v = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        for (s += 2;; s++) {
            char c = *s;
            if (c >= '0' && c <= '9') v = v * 16 + (u32)(c - '0');
            else if (c >= 'a' && c <= 'f') v = v * 16 + (u32)(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v = v * 16 + (u32)(c - 'A' + 10);
            else break;
        }
    } else {
        for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (u32)(*s - '0');
    }
    return v;
}

/* Find "key=" at a token start in cmdline; return pointer to the value. */
static const char *arg(const char *cmd, const char *key)
{
    if (!cmd) return 0;
    for (const char *p = cmd; *p; p++) {
        if (p != cmd && p[-1] != ' ') continue;
        const char *k = key, *q = p;
        while (*k && *q == *k) { k++; q++; }
        if (!*k && *q == '=') return q + 1;
    }
    return 0;
}

struct idt_entry { u16 off_lo, sel; u8 zero, type; u16 off_hi; } __attribute__((packed));
struct dtr { u16 limit; u32 base; } __attribute__((packed));
static struct idt_entry idt[256];
static const unsigned long long gdt[3] = { 0, 0x00CF9A000000FFFFull, 0x00CF92000000FFFFull };

static void set_gate(int n, void (*h)(void))
{
    u32 a = (u32)h;
    idt[n].off_lo = (u16)a; idt[n].off_hi = (u16)(a >> 16);
    idt[n].sel = 0x08; idt[n].zero = 0; idt[n].type = 0x8E;
}

static void fill_page(u32 *p)
{
    for (int i = 0; i < 1024; i++) p[i] = xs32() | 1u;   /* never a zero word */
}

/* --- ping responder: RTL8139, polled (no interrupts), ARP + ICMP echo --- */
/* Paging is off, so a buffer's address is its physical (DMA) address. The
 * buffers are in .bss, below the RAM that is filled and dirtied. */
#define RX_RING 8192u
static u8 rx_buf[RX_RING + 16 + 2048] __attribute__((aligned(16)));
static u8 tx_buf[4][1536] __attribute__((aligned(16)));
static u16 nic_io;
static u32 rx_off, tx_next, my_ip; /* my_ip in network byte order as bytes */
static u8 my_mac[6];
static u32 net_rx, net_echo, net_arp, net_bad, net_resync;

static u32 pci_read(u32 bus, u32 dev, u32 fn, u32 off)
{
    outl(0xCF8, 0x80000000u | bus << 16 | dev << 11 | fn << 8 | (off & 0xFC));
    return inl(0xCFC);
}
static void pci_write(u32 bus, u32 dev, u32 fn, u32 off, u32 v)
{
    outl(0xCF8, 0x80000000u | bus << 16 | dev << 11 | fn << 8 | (off & 0xFC));
    outl(0xCFC, v);
}

static int parse_ip(const char *s, u32 *out)
{
    u32 v = 0;
    for (int i = 0; i < 4; i++) {
        if (*s < '0' || *s > '9') return 0;
        u32 o = 0;
        while (*s >= '0' && *s <= '9') o = o * 10 + (u32)(*s++ - '0');
        if (o > 255 || (i < 3 && *s++ != '.')) return 0;
        ((u8 *)&v)[i] = (u8)o;
    }
    *out = v;
    return 1;
}

static int nic_init(void)
{
    for (u32 dev = 0; dev < 32; dev++) {
        if (pci_read(0, dev, 0, 0) != 0x813910ECu) continue;
        u32 bar = pci_read(0, dev, 0, 0x10);
        if (!(bar & 1u)) return 0;
        nic_io = (u16)(bar & 0xFFFCu);
        pci_write(0, dev, 0, 0x04, pci_read(0, dev, 0, 0x04) | 0x5u); /* I/O + bus master */
        outb(nic_io + 0x52, 0);                                        /* power on */
        outb(nic_io + 0x37, 0x10);                                     /* reset */
        for (int i = 0; i < 1000000 && (inb(nic_io + 0x37) & 0x10); i++)
            ;
        for (int i = 0; i < 6; i++) my_mac[i] = inb(nic_io + (u16)i);
        outl(nic_io + 0x30, (u32)rx_buf);          /* RBSTART */
        outw(nic_io + 0x3C, 0);                    /* IMR: polled */
        outl(nic_io + 0x44, 0xFu | (1u << 7));     /* RCR: 8K+16, WRAP, accept all we see */
        outb(nic_io + 0x37, 0x0C);                 /* RE | TE */
        return 1;
    }
    return 0;
}

static u16 csum(const u8 *p, u32 n)
{
    u32 sum = 0;
    for (u32 i = 0; i + 1 < n; i += 2) sum += (u32)p[i] << 8 | p[i + 1];
    if (n & 1) sum += (u32)p[n - 1] << 8;
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return (u16)~sum;
}

/* The next transmit buffer, once its descriptor is free (the NIC sets OWN
 * when it has read the buffer; QEMU does so at once). */
static u8 *tx_slot(void)
{
    for (int i = 0; i < 100000 && !(inl(nic_io + 0x10 + (u16)(4 * tx_next)) & (1u << 13)); i++)
        ;
    return tx_buf[tx_next];
}

static void nic_send(u32 len)
{
    u32 d = tx_next;
    if (len < 60) {
        for (u32 i = len; i < 60; i++) tx_buf[d][i] = 0;
        len = 60;
    }
    outl(nic_io + 0x20 + (u16)(4 * d), (u32)tx_buf[d]);
    outl(nic_io + 0x10 + (u16)(4 * d), len);
    tx_next = (d + 1) & 3;
}

static void copy(u8 *d, const u8 *s, u32 n) { while (n--) *d++ = *s++; }
static int same(const u8 *a, const u8 *b, u32 n) { while (n--) if (*a++ != *b++) return 0; return 1; }

static void handle_frame(const u8 *f, u32 len)
{
    net_rx++;
    if (len < 42) return;
    u16 type = (u16)(f[12] << 8 | f[13]);
    const u8 *ip = (const u8 *)&my_ip;
    u8 *o;
    if (type == 0x0806 && f[20] == 0 && f[21] == 1 && same(f + 38, ip, 4)) { /* ARP request for us */
        o = tx_slot();
        copy(o, f + 6, 6); copy(o + 6, my_mac, 6); copy(o + 12, f + 12, 8);
        o[20] = 0; o[21] = 2;
        copy(o + 22, my_mac, 6); copy(o + 28, ip, 4);
        copy(o + 32, f + 22, 6); copy(o + 38, f + 28, 4);
        net_arp++;
        nic_send(42);
        return;
    }
    if (type != 0x0800 || (f[14] >> 4) != 4) return;
    u32 ihl = (u32)(f[14] & 15) * 4, total = (u32)(f[16] << 8 | f[17]);
    if (ihl < 20 || total < ihl + 8 || 14 + total > len || total > 1500) { net_bad++; return; }
    if (!same(f + 30, ip, 4) || f[23] != 1 || f[14 + ihl] != 8) return; /* ICMP echo request to us */
    o = tx_slot();
    copy(o, f + 6, 6); copy(o + 6, my_mac, 6); copy(o + 12, f + 12, 2 + total);
    copy(o + 26, f + 30, 4); copy(o + 30, f + 26, 4); /* swap addresses: header sum unchanged */
    u8 *icmp = o + 14 + ihl;
    icmp[0] = 0; icmp[2] = icmp[3] = 0;
    u16 c = csum(icmp, total - ihl);
    icmp[2] = (u8)(c >> 8); icmp[3] = (u8)c;
    net_echo++;
    nic_send(14 + total);
}

/* A received frame's 4-byte header: status (bit 0: received OK), length
 * including the CRC. */
static int rx_header_ok(const u8 *h)
{
    u32 len = (u32)(h[2] | h[3] << 8);
    return (h[0] & 1u) && len >= 4u && len <= 1522u;
}

static void nic_poll(void)
{
    for (int budget = 0; budget < 64 && !(inb(nic_io + 0x37) & 1u); budget++) { /* !BUFE */
        const u8 *h = rx_buf + rx_off;
        if (!rx_header_ok(h)) {
            /* Lost sync. Seen once per migration or so: on the destination
             * our read offset can lag the NIC's read pointer (CAPR + 16) by
             * a few frames. Go on from the NIC's pointer when a frame starts
             * there, else drop what is in the ring (CBR: its write position). */
            u32 capr = (inw(nic_io + 0x38) + 16u) % RX_RING, cbr = inw(nic_io + 0x3A) % RX_RING;
            int at_capr = capr != rx_off && rx_header_ok(rx_buf + capr);
            net_resync++;
            if (net_resync <= 4) {
                puts_("shroud-guest: net resync off="); putu(rx_off); puts_(" nic_read="); putu(capr);
                puts_(" nic_write="); putu(cbr); puts_(at_capr ? " -> nic_read\n" : " -> nic_write (ring dropped)\n");
            }
            rx_off = at_capr ? capr : cbr;
            outw(nic_io + 0x38, (u16)(rx_off - 16u));
            if (!at_capr) break;
            continue;
        }
        u32 len = (u32)(h[2] | h[3] << 8);
        handle_frame(h + 4, len - 4u);
        rx_off = (rx_off + len + 4u + 3u) & ~3u;
        if (rx_off >= RX_RING) rx_off -= RX_RING;
        outw(nic_io + 0x38, (u16)(rx_off - 16u)); /* CAPR */
    }
    outw(nic_io + 0x3E, 0xFFFF); /* acknowledge whatever the NIC reported */
}

void kmain(u32 magic, u32 *mbi)
{
    struct dtr g = { sizeof(gdt) - 1, (u32)gdt };
    __asm__ volatile("lgdt %0\n\t"
                     "ljmp $0x08, $1f\n"
                     "1:\n\t"
                     "movw $0x10, %%ax\n\t"
                     "movw %%ax, %%ds\n\tmovw %%ax, %%es\n\tmovw %%ax, %%ss\n\t"
                     "movw %%ax, %%fs\n\tmovw %%ax, %%gs\n\t"
                     : : "m"(g) : "eax", "memory");

    const char *cmd = 0;
    u32 ram_top = 0x2000000;
    if (magic == 0x2BADB002u) {
        if (mbi[0] & 1u) ram_top = 0x100000u + mbi[2] * 1024u;
        if (mbi[0] & 4u) cmd = (const char *)mbi[4];
    }
    const char *v;
    u32 seed = (v = arg(cmd, "seed")) ? parse_num(v) : 1;
    u32 dirty = (v = arg(cmd, "dirty")) ? parse_num(v) : 0;
    u32 hot = (v = arg(cmd, "hot")) ? parse_num(v) : 0;
    u32 base = (v = arg(cmd, "base")) ? parse_num(v) : 0x1000000u;
    u32 fillend = (v = arg(cmd, "fillend")) ? parse_num(v) : 0x1000000u;
    u32 hz = (v = arg(cmd, "hz")) ? parse_num(v) : 250;
    if (hz < 18 || hz > 2000) hz = 250;
    int net = (v = arg(cmd, "ip")) != 0 && parse_ip(v, &my_ip);
    rng = seed * 2654435761u + 0x9E3779B9u;
    if (!rng) rng = 1;

    puts_("shroud-guest: start ram_top="); puthex(ram_top);
    puts_(" seed="); putu(seed); puts_(" dirty="); putu(dirty);
    puts_(" hot="); putu(hot); puts_(" hz="); putu(hz); puts_("\n");

    /* Fill low RAM after the kernel (64 KiB aligned) with random data. */
    u32 lo = ((u32)_end + 0xFFFFu) & ~0xFFFFu;
    if (fillend > ram_top) fillend = ram_top;
    for (u32 a = lo; a + 4096 <= fillend; a += 4096) fill_page((u32 *)a);

    /* Dirty region: [base, ram_top - 1 MiB) (top MiB is left to the BIOS). */
    u32 rend = ram_top > 0x100000u ? ram_top - 0x100000u : ram_top;
    if (base < lo || base >= rend) base = lo;
    u32 npages = (rend - base) / 4096u;
    if (hot > npages / 2) hot = npages / 2;

    /* PIC remap to 0x20/0x28, only IRQ0 unmasked; PIT channel 0 at hz. */
    for (int i = 0; i < 256; i++) set_gate(i, i < 32 ? isr_fault : isr_irq);
    set_gate(0x20, isr_timer);
    struct dtr d = { sizeof(idt) - 1, (u32)idt };
    __asm__ volatile("lidt %0" : : "m"(d));
    outb(0x20, 0x11); outb(0xA0, 0x11);
    outb(0x21, 0x20); outb(0xA1, 0x28);
    outb(0x21, 4); outb(0xA1, 2);
    outb(0x21, 1); outb(0xA1, 1);
    outb(0x21, 0xFE); outb(0xA1, 0xFF);
    u32 div = 1193182u / hz;
    outb(0x43, 0x34); outb(0x40, (u8)div); outb(0x40, (u8)(div >> 8));

    if (net) {
        if (nic_init()) {
            const u8 *ip = (const u8 *)&my_ip;
            puts_("shroud-guest: net rtl8139 io="); puthex(nic_io); puts_(" ip=");
            for (int i = 0; i < 4; i++) { putu(ip[i]); if (i < 3) putc_('.'); }
            puts_(" mac=");
            for (int i = 0; i < 6; i++) { putc_("0123456789abcdef"[my_mac[i] >> 4]); putc_("0123456789abcdef"[my_mac[i] & 15]); if (i < 5) putc_(':'); }
            puts_("\n");
        } else {
            puts_("shroud-guest: net: no RTL8139 NIC found, not answering pings\n");
            net = 0;
        }
    }
    puts_("shroud-guest: ready filled="); puthex(lo); puts_("-"); puthex(fillend);
    puts_(" region="); puthex(base); puts_("-"); puthex(rend);
    puts_(" pages="); putu(npages); puts_("\n");

    u32 per_tick = dirty / hz, rem = dirty % hz, acc = 0, frac = 0;
    u32 sweep = hot, seen = 0, dirtied = 0, beats = 0;
    for (;;) {
        __asm__ volatile("sti\n\thlt\n\tcli" ::: "memory");
        u32 now = ticks;
        if (net) nic_poll();
        while (seen != now) {
            seen++;
            for (u32 h = 0; h < hot; h++)     /* hot set: rewrite a few words */
                ((volatile u32 *)(base + h * 4096u))[xs32() & 1023] = xs32() | 1u;
            acc += per_tick;
            frac += rem;
            if (frac >= hz) { frac -= hz; acc++; }
            while (acc >= 4096u && npages > hot) {
                fill_page((u32 *)(base + sweep * 4096u));
                acc -= 4096u;
                dirtied++;
                if (++sweep >= npages) sweep = hot;
            }
            if (seen % (2u * hz) == 0) {
                beats++;
                puts_("shroud-guest: beat "); putu(beats);
                puts_(" dirtied_pages="); putu(dirtied);
                if (net) {
                    puts_(" rx="); putu(net_rx); puts_(" echo="); putu(net_echo);
                    puts_(" arp="); putu(net_arp); puts_(" bad="); putu(net_bad);
                    puts_(" resync="); putu(net_resync);
                }
                puts_("\n");
            }
        }
    }
}
